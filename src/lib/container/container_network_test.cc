// Tests for ContainerNetwork: `ip -j` parsing and the manifest record's strict reading.
#include "container/container_network.h"

#include <gtest/gtest.h>

namespace arch {
namespace {

constexpr const char* kIpAddr = R"([
 {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"link_type":"loopback",
  "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8},
               {"family":"inet6","local":"::1","prefixlen":128}]},
 {"ifindex":7,"ifname":"eth0","flags":["BROADCAST","MULTICAST"],"link_type":"ether",
  "linkinfo":{"info_kind":"veth"},
  "addr_info":[{"family":"inet","local":"10.1.2.3","prefixlen":24}]}])";

TEST(ContainerNetwork, ParsesIpAddrJson) {
  auto links = parse_ip_addr_json(kIpAddr);
  ASSERT_TRUE(links) << links.error().message();
  ASSERT_EQ(links->size(), 2u);
  EXPECT_EQ((*links)[0].name, "lo");
  EXPECT_EQ((*links)[0].kind, "loopback");
  EXPECT_TRUE((*links)[0].up);
  EXPECT_EQ((*links)[0].addresses, (std::vector<std::string>{"127.0.0.1/8", "::1/128"}));
  EXPECT_EQ((*links)[1].kind, "veth");
  EXPECT_FALSE((*links)[1].up);
  EXPECT_FALSE(parse_ip_addr_json("not json"));
}

TEST(ContainerNetwork, RecordRoundTrips) {
  NetworkRecord rec;
  rec.mode = "own";
  rec.criu_key = kArchNetnsKey;
  rec.interfaces = *parse_ip_addr_json(kIpAddr);
  auto back = network_record_from_json(to_json(rec));
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->mode, "own");
  ASSERT_EQ(back->interfaces.size(), 2u);
  EXPECT_EQ(back->interfaces[1].addresses[0], "10.1.2.3/24");
}

TEST(ContainerNetwork, RecordRefusesWhatIsNotIpOutput) {
  auto base = to_json(NetworkRecord{"own", kArchNetnsKey, {{"lo", "loopback", true, {}}}, {}});
  ASSERT_TRUE(network_record_from_json(base));
  auto bad_mode = base;
  bad_mode["mode"] = "other";
  EXPECT_FALSE(network_record_from_json(bad_mode));
  auto bad_key = base;
  bad_key["criu_key"] = "x]:y\naction-script /tmp/x";
  EXPECT_FALSE(network_record_from_json(bad_key));
  auto bad_name = base;
  bad_name["interfaces"][0]["name"] = "-lo";
  EXPECT_FALSE(network_record_from_json(bad_name));
  auto long_name = base;
  long_name["interfaces"][0]["name"] = "abcdefghijklmnopq";
  EXPECT_FALSE(network_record_from_json(long_name));
  auto bad_addr = base;
  bad_addr["interfaces"][0]["addresses"] = {"1.2.3.4/8 dev eth0"};
  EXPECT_FALSE(network_record_from_json(bad_addr));
}

}  // namespace
}  // namespace arch
