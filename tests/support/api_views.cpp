#include "support/api_views.hpp"

#include <boost/json/parse.hpp>

#include "support/http_client.hpp"

namespace ckptd::test {

std::string artifacts_target(const std::string& job) {
  return "/v1/post-training/job/artifacts?job_uuid=" + job;
}

boost::json::array checkpoints_of(std::uint16_t port, const std::string& job) {
  auto res = get(port, artifacts_target(job));
  if (res.status != 200) return {};
  return boost::json::parse(res.body).as_object().at("checkpoints").as_array();
}

std::vector<std::string> identifiers(const boost::json::array& checkpoints) {
  std::vector<std::string> out;
  out.reserve(checkpoints.size());
  for (const auto& c : checkpoints) out.emplace_back(c.as_object().at("identifier").as_string());
  return out;
}

bool ready(std::uint16_t port) { return get(port, "/readyz").status == 200; }

}  // namespace ckptd::test
