// Tests for archd's error replies: one status per error kind, the message without a stray errno.
#include "http_reply.h"

#include <gtest/gtest.h>
#include <httplib.h>

namespace arch::agent {
namespace {

TEST(HttpReply, EveryKindHasItsStatus) {
  EXPECT_EQ(http_status(ErrorKind::kInvalidInput), 400);
  EXPECT_EQ(http_status(ErrorKind::kPermission), 403);
  EXPECT_EQ(http_status(ErrorKind::kNotFound), 404);
  EXPECT_EQ(http_status(ErrorKind::kConflict), 409);
  EXPECT_EQ(http_status(ErrorKind::kInternal), 500);
  EXPECT_EQ(http_status(ErrorKind::kUnsupported), 501);
  EXPECT_EQ(http_status(ErrorKind::kUnavailable), 503);
  EXPECT_EQ(http_status(ErrorKind::kTimeout), 504);
}

TEST(HttpReply, AKindedErrorCarriesNoErrnoText) {
  httplib::Response res;
  reply_error(res, Error(ErrorKind::kNotFound, "no job 'x'").wrap("restore"));
  EXPECT_EQ(res.status, 404);
  auto body = nlohmann::json::parse(res.body);
  EXPECT_EQ(body["error"], "restore: no job 'x'");
  EXPECT_EQ(body["kind"], "not-found");
}

TEST(HttpReply, ASyscallErrorKeepsStrerrorAndItsKind) {
  httplib::Response res;
  reply_error(res, Error("open /etc/arch/x", EACCES));
  EXPECT_EQ(res.status, 403);
  EXPECT_EQ(nlohmann::json::parse(res.body)["error"], "open /etc/arch/x: Permission denied");
}

TEST(HttpReply, InvalidUtf8IsReplacedNotThrown) {
  httplib::Response res;
  EXPECT_NO_THROW(reply(res, 200, {{"name", std::string("a\xff")}}));
  EXPECT_EQ(res.status, 200);
}

}  // namespace
}  // namespace arch::agent
