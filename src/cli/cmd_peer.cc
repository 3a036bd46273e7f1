// archctl peer cert|list|ping: this node's certificate for the channel between archd
// instances (peer/peer_cert.h) and its peers ([peers] nodes).
#include <fmt/core.h>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "peer/group_peers.h"
#include "peer/peer_cert.h"

namespace arch::cli {
namespace {

nlohmann::json info_json(const PeerCertInfo& i) {
  return {{"name", i.name},
          {"issuer", i.issuer},
          {"not_after", i.not_after},
          {"fingerprint", i.fingerprint},
          {"issued", i.issued}};
}

int run_cert(bool renew, bool json) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  PeerCertInfo info;
  auto id = ensure_peer_identity(*config, renew, &info);
  if (!id) return report_error(id.error());
  if (json) {
    fmt::print("{}\n", info_json(info).dump(2));
  } else {
    fmt::print("{} certificate of node {} (issuer {}, valid until {}){}\n  sha256 {}\n",
               info.issued ? "issued" : "kept", info.name, info.issuer, info.not_after,
               info.issued ? "; " + info.why : "", info.fingerprint);
  }
  return 0;
}

int run_list(bool json) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto id = load_peer_identity(*config);
  nlohmann::json out = {{"node", peer_node_name(*config)},
                        {"listen", config->peers.listen},
                        {"certificate", id ? info_json(describe_peer_certificate(id->cert.get()))
                                           : nlohmann::json(id.error().message())}};
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : config->peers.nodes) {
    auto reply = ping_peer(*config, n.name);
    nodes.push_back(
        {{"name", n.name},
         {"address", fmt::format("{}:{}", n.host, n.port)},
         {"reachable", reply.has_value()},
         {"detail", reply ? nlohmann::json(*reply) : nlohmann::json(reply.error().message())}});
  }
  out["peers"] = nodes;
  if (json) {
    fmt::print("{}\n", out.dump(2));
    return 0;
  }
  fmt::print("this node: {}  listen: {}\n", out["node"].get<std::string>(),
             config->peers.listen.empty() ? "(off)" : config->peers.listen);
  fmt::print("{:<20} {:<24} {}\n", "PEER", "ADDRESS", "STATUS");
  for (const auto& n : nodes) {
    std::string status = n["reachable"]
                             ? fmt::format("ok ({:.1f} ms)", n["detail"].value("rtt_ms", 0.0))
                             : n["detail"].get<std::string>();
    fmt::print("{:<20} {:<24} {}\n", n["name"].get<std::string>(), n["address"].get<std::string>(),
               status);
  }
  return 0;
}

int run_ping(const std::string& node, bool json) {
  auto config = node_config();
  if (!config) return report_error(config.error());
  auto reply = ping_peer(*config, node);
  if (!reply) return report_error(reply.error());
  if (json) {
    fmt::print("{}\n", reply->dump(2));
  } else {
    fmt::print("{} ({}): archd {}, authenticated both ways, {:.1f} ms\n", reply->value("node", ""),
               reply->value("address", ""), reply->value("version", ""),
               reply->value("rtt_ms", 0.0));
  }
  return 0;
}

}  // namespace

Handler add_peer_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "peer", "The authenticated channel between archd instances (mutual TLS from the node key)");
  cmd->require_subcommand(1);
  struct Opts {
    std::string node, output;
    bool renew = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cert = cmd->add_subcommand("cert", "Issue (or keep) this node's certificate");
  cert->add_flag("--renew", o->renew,
                 "A new key pair and certificate even if the current one is good");
  add_output_option(cert, o->output);
  auto* list = cmd->add_subcommand("list", "This node's certificate and its peers, each pinged");
  add_output_option(list, o->output);
  auto* ping = cmd->add_subcommand("ping", "Connect to a peer and authenticate both ways");
  ping->add_option("node", o->node, "A name of [peers] nodes")->required();
  add_output_option(ping, o->output);
  return [=] {
    bool json = o->output == "json";
    if (cert->parsed()) return run_cert(o->renew, json);
    if (list->parsed()) return run_list(json);
    return run_ping(o->node, json);
  };
}

}  // namespace arch::cli
