// TempDir: a fresh private directory under $TMPDIR, removed with its contents (for tests).
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

namespace arch {

/// A directory made with mkdtemp(3) under the temp directory and removed, with everything in
/// it, when the TempDir goes away. Header-only: the unit tests' one temporary-directory
/// fixture; library code writes into the store or state directories instead.
class TempDir {
 public:
  /// Makes "<tmp>/<prefix>XXXXXX"; throws when it cannot (the test then fails).
  explicit TempDir(std::string_view prefix = "arch-test-") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// The directory's absolute path.
  [[nodiscard]] const std::string& path() const { return path_; }
  /// The path of `rel` inside it: dir / "a/b".
  [[nodiscard]] std::string operator/(std::string_view rel) const {
    return path_ + "/" + std::string(rel);
  }

 private:
  std::string path_;
};

}  // namespace arch
