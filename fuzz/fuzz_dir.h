// A scratch directory per fuzz input, under $ARCH_FUZZ_TMP (scripts/fuzz.sh: a tmpfs),
// removed with everything in it afterwards.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

class FuzzDir {
 public:
  FuzzDir() {
    const char* base = getenv("ARCH_FUZZ_TMP");
    std::string tmpl = std::string(base != nullptr ? base : "/tmp") + "/arch-fuzz-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~FuzzDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  FuzzDir(const FuzzDir&) = delete;
  FuzzDir& operator=(const FuzzDir&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  std::string path_;
};
