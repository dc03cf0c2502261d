#include "router.hpp"

#include "artifacts_json.hpp"
#include "query.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <utility>
#include <variant>

namespace ckptd::api {
namespace {

constexpr std::string_view artifacts_path = "/v1/post-training/job/artifacts";
constexpr std::string_view status_path = "/v1/post-training/job/status";
constexpr std::string_view jobs_path = "/v1/post-training/jobs";
constexpr std::string_view health_path = "/healthz";
constexpr std::string_view ready_path = "/readyz";
constexpr std::string_view read_methods = "GET, HEAD";

// Longest piece of a request echoed back in an error detail.
constexpr std::size_t max_echo_bytes = 256;

constexpr std::string_view rate_limited_detail =
    "You have exceeded the rate limit. Please try again later.";
constexpr std::string_view internal_error_detail =
    "An unexpected error occurred. Our team has been notified.";

std::string_view title_of(unsigned status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

std::string echo(std::string_view text) {
  if (text.size() <= max_echo_bytes) return std::string(text);
  return std::string(text.substr(0, max_echo_bytes)) + "...";
}

std::shared_ptr<const std::string> body_of(const std::shared_ptr<const cached_body>& cached) {
  // Aliasing: the string stays alive exactly as long as its cached_body.
  return std::shared_ptr<const std::string>(cached, &cached->bytes);
}

// 200 with a cached job body, or 304 when the client holds this version.
response cached_response(const request& req, const std::shared_ptr<const cached_body>& cached) {
  response res;
  res.body = body_of(cached);
  res.etag = cached->etag;
  res.cache_control = "no-cache";
  if (!req.if_none_match.empty() && etag_matches(req.if_none_match, cached->etag)) {
    res.status = 304;
    res.send_body = false;
  }
  return res;
}

response small_json(std::string_view bytes) {
  response res;
  res.body = std::make_shared<const std::string>(bytes);
  res.cache_control = "no-store";
  return res;
}

response route(const request& req, const decoded_target& target, const catalog& jobs, bool ready) {
  if (target.path == artifacts_path) {
    auto uuid = job_uuid_param(target);
    if (auto* bad = std::get_if<bad_request>(&uuid)) return error_response(400, bad->detail);
    const std::string& job_uuid = std::get<std::string>(uuid);
    auto cached = jobs.artifacts(job_uuid);
    if (!cached) return error_response(404, "No training job '" + echo(job_uuid) + "' is known.");
    return cached_response(req, cached);
  }
  if (target.path == status_path) {
    auto uuid = job_uuid_param(target);
    if (auto* bad = std::get_if<bad_request>(&uuid)) return error_response(400, bad->detail);
    const std::string& job_uuid = std::get<std::string>(uuid);
    auto cached = jobs.status(job_uuid);
    if (!cached) return error_response(404, "No training job '" + echo(job_uuid) + "' is known.");
    return cached_response(req, cached);
  }
  if (target.path == jobs_path) return cached_response(req, jobs.jobs());
  if (target.path == health_path) return small_json(R"({"status":"ok"})");
  if (target.path == ready_path) {
    if (!ready) return error_response(503, "ckptd is still loading its index.");
    return small_json(R"({"status":"ready"})");
  }
  return error_response(404, "No route for path '" + echo(target.path) + "'.");
}

bool is_known_path(std::string_view path) {
  return path == artifacts_path || path == status_path || path == jobs_path || path == health_path || path == ready_path;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view opaque_tag(std::string_view tag) {
  if (tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
  return tag;
}

}  // namespace

response error_response(unsigned status, std::string_view detail) {
  boost::json::object body;
  body.reserve(3);
  body.emplace("status", status);
  body.emplace("title", title_of(status));
  body.emplace("detail", to_valid_utf8(detail));
  response res;
  res.status = status;
  res.body = std::make_shared<const std::string>(boost::json::serialize(body));
  res.cache_control = "no-store";
  if (status == 405) res.allow = read_methods;
  return res;
}

response rate_limited_response(std::chrono::nanoseconds wait) {
  // Built once: a flood of refused requests should cost as little as possible.
  static const std::shared_ptr<const std::string> body =
      error_response(429, rate_limited_detail).body;
  response res;
  res.status = 429;
  res.body = body;
  res.cache_control = "no-store";
  res.retry_after = wait > std::chrono::nanoseconds::zero() ? wait : std::chrono::nanoseconds(1);
  return res;
}

response internal_error_response() { return error_response(500, internal_error_detail); }

bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  if (trim(if_none_match) == "*") return true;
  const std::string_view ours = opaque_tag(etag);
  while (!if_none_match.empty()) {
    const std::size_t comma = if_none_match.find(',');
    const std::string_view tag = trim(if_none_match.substr(0, comma));
    if (!tag.empty() && opaque_tag(tag) == ours) return true;
    if (comma == std::string_view::npos) break;
    if_none_match.remove_prefix(comma + 1);
  }
  return false;
}

response handle(const request& req, const catalog& jobs, bool ready) {
  auto decoded = decode_target(req.target);
  if (auto* bad = std::get_if<bad_request>(&decoded)) return error_response(400, bad->detail);
  const decoded_target& target = std::get<decoded_target>(decoded);

  const bool head = req.method == "HEAD";
  if (!head && req.method != "GET") {
    if (!is_known_path(target.path)) {
      return error_response(404, "No route for path '" + echo(target.path) + "'.");
    }
    return error_response(405, "Only GET and HEAD are allowed here.");
  }
  response res = route(req, target, jobs, ready);
  if (head) res.send_body = false;
  return res;
}

}  // namespace ckptd::api
