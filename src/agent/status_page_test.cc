// Tests for the status page: what it shows, and that nothing in the status becomes markup.
#include "status_page.h"

#include <gtest/gtest.h>

namespace arch::agent {
namespace {

using nlohmann::json;

TEST(StatusPage, EscapesHtml) {
  EXPECT_EQ(html_escape(R"(<a href="x">'&'</a>)"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
}

TEST(StatusPage, ShowsTheNodeContainersDrainAndEvents) {
  json s = {{"node", "node-1"},
            {"version", "0.9"},
            {"pid", 42},
            {"started", 1764000000},
            {"draining", true},
            {"draining_since", 1764000100},
            {"drain_kind", "manual"},
            {"drain_reason", "maintenance"},
            {"watcher", {{"endpoint", ""}, {"state", "disabled"}, {"last_poll", nullptr}}},
            {"containers",
             {{{"namespace", "default"},
               {"id", "job-1"},
               {"key", "k1"},
               {"status", "running"},
               {"store", "/s"},
               {"created", 1764000000}}}},
            {"drain",
             {{"id", 3},
              {"kind", "manual"},
              {"reason", "maintenance"},
              {"state", "done"},
              {"total", 1},
              {"done", 1},
              {"report",
               {{"containers",
                 {{{"namespace", "default"},
                   {"id", "job-1"},
                   {"result", "checkpointed"},
                   {"seconds", 1.25},
                   {"detail", "/s/default/k1/ckpt-1"}}}}}}}},
            {"events",
             {{{"seq", 1},
               {"time", "2026-11-21T22:36:24.123Z"},
               {"kind", "checkpoint"},
               {"namespace", "default"},
               {"id", "job-1"},
               {"outcome", "ok"},
               {"duration_ms", 1250.0},
               {"detail", "by archctl: /s/default/k1/ckpt-1"}},
              {{"seq", 2}, {"kind", "agent"}, {"outcome", "started"}}}}};
  std::string page = render_status_page(s);
  for (const char* want :
       {"<title>archd on node-1</title>", "Draining since 2025-11-24T16:01:40Z", "maintenance",
        "<td>job-1</td>", "<td>checkpointed</td>", "by archctl: /s/default/k1/ckpt-1",
        "<td>1.2</td>", "drain 3 (manual)", "<td>started</td>"}) {
    EXPECT_NE(page.find(want), std::string::npos) << want << " not in\n" << page;
  }
  EXPECT_EQ(page.find("<script"), std::string::npos);
}

TEST(StatusPage, NothingFromTheStatusBecomesMarkup) {
  std::string evil = R"(<script>alert(1)</script><img src=x onerror="y">)";
  json s = {{"node", evil},
            {"drain_reason", evil},
            {"draining", true},
            {"containers", {{{"namespace", evil}, {"id", evil}, {"key", evil}}}},
            {"events", {{{"kind", "checkpoint"}, {"detail", evil}, {"id", evil}}}},
            {"watcher", {{"last_error", evil}}}};
  std::string page = render_status_page(s);
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(page.find("<img"), std::string::npos);
  EXPECT_NE(page.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  // Odd shapes (wrong types, missing members) render without throwing.
  EXPECT_NO_THROW(render_status_page(json::object()));
  EXPECT_NO_THROW(render_status_page({{"containers", 5}, {"drain", "x"}, {"events", {1, "a"}}}));
}

}  // namespace
}  // namespace arch::agent
