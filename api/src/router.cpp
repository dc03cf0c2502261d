#include "router.hpp"

#include "artifacts_json.hpp"
#include "openapi_document.hpp"  // generated from api/openapi.json
#include "query.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <variant>

namespace ckptd::api {
namespace {

struct route_entry {
  std::string_view path;
  route_id id;
  std::string_view label;
  std::string_view methods;  // Allow header
};

constexpr std::array<route_entry, 11> routes{{
    {"/v1/post-training/job/artifacts", route_id::artifacts, "artifacts", "GET, HEAD, OPTIONS"},
    {"/v1/post-training/job/status", route_id::status, "status", "GET, HEAD, OPTIONS"},
    {"/v1/post-training/jobs", route_id::jobs, "jobs", "GET, HEAD, OPTIONS"},
    {"/v1/post-training/job/cancel", route_id::cancel, "cancel", "POST, OPTIONS"},
    {"/v1/post-training/supervised-fine-tune", route_id::supervised_fine_tune,
     "supervised_fine_tune", "POST, OPTIONS"},
    {"/v1/post-training/preference-optimize", route_id::preference_optimize, "preference_optimize",
     "POST, OPTIONS"},
    {"/v1/ckptd/events", route_id::events, "events", "GET, OPTIONS"},
    {"/healthz", route_id::healthz, "healthz", "GET, HEAD, OPTIONS"},
    {"/readyz", route_id::readyz, "readyz", "GET, HEAD, OPTIONS"},
    {"/metrics", route_id::metrics, "metrics", "GET, HEAD, OPTIONS"},
    {"/openapi.json", route_id::openapi, "openapi", "GET, HEAD, OPTIONS"},
}};

const route_entry* find_route(route_id id) {
  for (const route_entry& r : routes) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

route_id route_of_path(std::string_view path) {
  for (const route_entry& r : routes) {
    if (r.path == path) return r.id;
  }
  return route_id::unknown;
}

// Allow without OPTIONS, for 405 (OPTIONS is answered, but it is not what a
// client that got 405 should try).
std::string_view methods_for_405(route_id id) {
  const route_entry* r = find_route(id);
  if (r == nullptr) return "GET, HEAD";
  std::string_view m = r->methods;
  return m.substr(0, m.rfind(", OPTIONS"));
}

// Longest piece of a request echoed back in an error detail.
constexpr std::size_t max_echo_bytes = 256;

constexpr std::string_view rate_limited_detail =
    "You have exceeded the rate limit. Please try again later.";
constexpr std::string_view internal_error_detail =
    "An unexpected error occurred. Our team has been notified.";
constexpr std::string_view not_running_detail =
    "ckptd observes training jobs; it does not start, run or cancel them.";

constexpr std::string_view cors_allow_methods = "GET, HEAD, POST, OPTIONS";
constexpr std::string_view cors_allow_headers =
    "Authorization, Content-Type, If-None-Match, Prefer, Last-Event-ID";
constexpr std::string_view cors_expose_headers =
    "ETag, Retry-After, retry-after-ms, Preference-Applied";
// How long a browser may cache a preflight answer, in seconds.
constexpr std::string_view cors_max_age = "600";

constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

std::string_view title_of(unsigned status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
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

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

// Calls f(element) for each element of a comma-separated header list.
template <typename F>
void for_each_element(std::string_view list, F f) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    const std::string_view element = trim(list.substr(0, comma));
    if (!element.empty()) f(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

std::string_view opaque_tag(std::string_view tag) {
  if (tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
  return tag;
}

// The q-value of one Accept-Encoding element ("gzip;q=0.5"): 1 when absent.
double q_value(std::string_view params) {
  double q = 1;
  while (!params.empty()) {
    const std::size_t semi = params.find(';');
    const std::string_view param = trim(params.substr(0, semi));
    if (param.size() >= 2 && lower(param[0]) == 'q' && param[1] == '=') {
      const std::string_view number = param.substr(2);
      double parsed = 0;
      const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), parsed);
      if (ec == std::errc() && end == number.data() + number.size()) q = parsed;
    }
    if (semi == std::string_view::npos) break;
    params.remove_prefix(semi + 1);
  }
  return q;
}

// 200 with a cached body, or 304 when the client holds this version; with
// "Prefer: wait", a 304 is flagged to be held on wait_prefix + wait_name.
// `cached` may be null when its ETag and size are known (an evicted job's
// body): a 304 needs no more; anything else comes back without a body, for
// the caller to flag (see response::load_job).
response cached_response(const request& req, const std::shared_ptr<const cached_body>& cached,
                         std::string_view etag, std::size_t size, std::string_view wait_prefix,
                         std::string_view wait_name, const options& opts) {
  const bool gzip = size >= gzip_min_bytes && accepts_gzip(req.accept_encoding);
  response res;
  res.etag = gzip ? gzip_etag(etag) : std::string(etag);
  res.vary = "Accept-Encoding";
  res.cache_control = "no-cache";
  // Clients send back the very ETag they were given: compare that first.
  if (!req.if_none_match.empty() &&
      (req.if_none_match == res.etag || etag_matches(req.if_none_match, res.etag))) {
    res.status = 304;
    res.send_body = false;
    res.body = cached ? std::shared_ptr<const std::string>(cached, &cached->bytes)
                      : std::make_shared<const std::string>();
    if (const auto wait = preferred_wait(req.prefer); wait && *wait > 0 && !wait_prefix.empty()) {
      const auto cap = static_cast<std::uint64_t>(std::max<std::int64_t>(opts.max_wait.count(), 0));
      res.wait = std::chrono::seconds(static_cast<std::int64_t>(std::min(*wait, cap)));
      if (res.wait.count() > 0) {
        res.wait_key = wait_prefix;
        res.wait_key += wait_name;
      }
    }
    return res;
  }
  if (!cached) {
    res.body = std::make_shared<const std::string>();
    return res;
  }
  // Aliasing: the strings stay alive exactly as long as their cached_body.
  res.body = std::shared_ptr<const std::string>(cached, &cached->bytes);
  if (gzip) {
    const std::string& zipped = cached->gzip_bytes();
    if (!zipped.empty()) {
      res.body = std::shared_ptr<const std::string>(cached, &zipped);
      res.content_encoding = "gzip";
      return res;
    }
    res.etag = cached->etag;  // zlib failed: the identity body, with its own ETag
  }
  res.body_tail = cached->tail();
  return res;
}

response cached_response(const request& req, const std::shared_ptr<const cached_body>& cached,
                         std::string_view wait_prefix, std::string_view wait_name,
                         const options& opts) {
  return cached_response(req, cached, cached->etag, cached->size(), wait_prefix, wait_name, opts);
}

response small_json(std::string_view bytes) {
  response res;
  res.body = std::make_shared<const std::string>(bytes);
  res.cache_control = "no-store";
  return res;
}

// Built once; the generated document is a constant of the build.
const std::shared_ptr<const cached_body>& openapi_body() {
  static const std::shared_ptr<const cached_body> body =
      make_cached_body(std::string(openapi_document));
  return body;
}

// The POST routes of jobs ckptd does not run: the body must still be JSON.
response not_running(const request& req) {
  if (trim(req.body).empty()) {
    return error_response(400, "The request body must be a JSON object; it is empty.");
  }
  boost::system::error_code ec;
  const boost::json::value parsed = boost::json::parse(req.body, ec);
  if (ec) {
    return error_response(400, "The request body is not valid JSON: " + ec.message() + ".");
  }
  if (!parsed.is_object()) return error_response(400, "The request body must be a JSON object.");
  return error_response(501, not_running_detail);
}

// The optional job_uuid filter of the event stream: absent is fine, but if
// given it follows job_uuid_param's rules.
std::variant<std::string, bad_request> optional_job_uuid(const decoded_target& target) {
  for (const query_param& p : target.params) {
    if (p.name == "job_uuid") return job_uuid_param(target);
  }
  return std::string();
}

std::variant<std::optional<std::uint64_t>, bad_request> last_event_id(
    const request& req, const decoded_target& target) {
  std::string_view text = trim(req.last_event_id);
  if (text.empty()) {
    for (const query_param& p : target.params) {
      if (p.name == "last_event_id") text = p.value;
    }
  }
  if (text.empty()) return std::optional<std::uint64_t>();
  std::uint64_t seq = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seq);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return bad_request{"Last-Event-ID must be an event id this server sent (a decimal number)."};
  }
  return std::optional<std::uint64_t>(seq);
}

response job_route(const request& req, const decoded_target& target, const catalog& jobs,
                   route_id id, const options& opts, const loaded_job* loaded) {
  auto uuid = job_uuid_param(target);
  if (auto* bad = std::get_if<bad_request>(&uuid)) return error_response(400, bad->detail);
  const std::string& job_uuid = std::get<std::string>(uuid);
  const catalog::job_entry* job = jobs.find(job_uuid);
  const auto unknown = [&] {
    return error_response(404, "No training job '" + echo(job_uuid) + "' is known.");
  };
  if (job == nullptr) return unknown();
  const bool artifacts = id == route_id::artifacts;
  auto cached = artifacts ? job->artifacts : job->status;
  if (!cached && loaded != nullptr && loaded->job_uuid == job_uuid) {
    if (loaded->result == loaded_job::outcome::gone) return unknown();
    if (loaded->result == loaded_job::outcome::failed) return internal_error_response();
    cached = artifacts ? loaded->bodies.artifacts : loaded->bodies.status;
  }
  response res =
      cached ? cached_response(req, cached, artifacts ? "a/" : "s/", job_uuid, opts)
             : cached_response(req, nullptr, artifacts ? job->artifacts_etag : job->status_etag,
                               artifacts ? job->artifacts_size : job->status_size,
                               artifacts ? "a/" : "s/", job_uuid, opts);
  if (!cached && res.status != 304) res.load_job = job_uuid;
  res.job_uuid = job_uuid;
  return res;
}

response route(const request& req, const decoded_target& target, route_id id, const catalog& jobs,
               bool ready, const options& opts, const loaded_job* loaded) {
  switch (id) {
    case route_id::artifacts:
    case route_id::status:
      return job_route(req, target, jobs, id, opts, loaded);
    case route_id::jobs:
      return cached_response(req, jobs.jobs(), "j", {}, opts);
    case route_id::cancel:
    case route_id::supervised_fine_tune:
    case route_id::preference_optimize:
      return not_running(req);
    case route_id::events: {
      auto job = optional_job_uuid(target);
      if (auto* bad = std::get_if<bad_request>(&job)) return error_response(400, bad->detail);
      auto last = last_event_id(req, target);
      if (auto* bad = std::get_if<bad_request>(&last)) return error_response(400, bad->detail);
      response res;
      res.events = true;
      res.events_job = std::move(std::get<std::string>(job));
      res.last_event_id = std::get<std::optional<std::uint64_t>>(last);
      res.content_type = "text/event-stream";
      res.cache_control = "no-cache";
      res.body = std::make_shared<const std::string>();
      return res;
    }
    case route_id::healthz:
      return small_json(R"({"status":"ok"})");
    case route_id::readyz:
      if (!ready) return error_response(503, "ckptd is still loading its index.");
      return small_json(R"({"status":"ready"})");
    case route_id::metrics: {
      response res;
      res.metrics = true;
      res.content_type = prometheus_content_type;
      res.cache_control = "no-store";
      res.body = std::make_shared<const std::string>();
      return res;
    }
    case route_id::openapi:
      return cached_response(req, openapi_body(), {}, {}, opts);
    case route_id::unknown:
      break;
  }
  return error_response(404, "No route for path '" + echo(target.path) + "'.");
}

bool method_allowed(route_id id, std::string_view method) {
  switch (id) {
    case route_id::cancel:
    case route_id::supervised_fine_tune:
    case route_id::preference_optimize:
      return method == "POST";
    case route_id::events:
      return method == "GET";
    default:
      return method == "GET" || method == "HEAD";
  }
}

response preflight(const request& req, route_id id, const options& opts) {
  response res;
  res.status = 204;
  res.send_body = false;
  res.body = std::make_shared<const std::string>();
  res.allow = find_route(id)->methods;
  res.cache_control = "no-store";
  if (!req.access_control_request_method.empty() && !opts.cors_origins.empty() &&
      origin_allowed(req.origin, opts.cors_origins)) {
    res.cors.emplace_back("Access-Control-Allow-Methods", cors_allow_methods);
    res.cors.emplace_back("Access-Control-Allow-Headers", cors_allow_headers);
    res.cors.emplace_back("Access-Control-Max-Age", cors_max_age);
  }
  return res;
}

}  // namespace

route_id route_of(std::string_view target) {
  const std::size_t end = target.find_first_of("?#");
  return route_of_path(target.substr(0, end));
}

std::string_view route_label(route_id route) {
  const route_entry* r = find_route(route);
  return r == nullptr ? "other" : r->label;
}

bool is_probe(route_id route) { return route == route_id::healthz || route == route_id::readyz; }

response error_response(unsigned status, std::string_view detail) {
  std::string body = "{\"status\":";
  json_text::append_integer(body, status);
  body += ",\"title\":";
  json_text::append_string(body, title_of(status));
  body += ",\"detail\":";
  json_text::append_string(body, detail);
  body += '}';
  response res;
  res.status = status;
  res.body = std::make_shared<const std::string>(std::move(body));
  res.cache_control = "no-store";
  if (status == 405) res.allow = "GET, HEAD";
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
  bool found = false;
  for_each_element(if_none_match, [&](std::string_view tag) {
    if (opaque_tag(tag) == ours) found = true;
  });
  return found;
}

bool accepts_gzip(std::string_view accept_encoding) {
  std::optional<double> gzip;
  std::optional<double> any;
  for_each_element(accept_encoding, [&](std::string_view element) {
    const std::size_t semi = element.find(';');
    const std::string_view coding = trim(element.substr(0, semi));
    const double q = semi == std::string_view::npos ? 1.0 : q_value(element.substr(semi + 1));
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip = std::max(gzip.value_or(0), q);
    } else if (coding == "*") {
      any = q;
    }
  });
  if (gzip) return *gzip > 0;
  return any && *any > 0;
}

std::optional<std::uint64_t> preferred_wait(std::string_view prefer) {
  std::optional<std::uint64_t> out;
  for_each_element(prefer, [&](std::string_view element) {
    // A preference may carry parameters after ';'; wait takes none.
    const std::string_view pref = trim(element.substr(0, element.find(';')));
    const std::size_t eq = pref.find('=');
    if (eq == std::string_view::npos || !iequals(trim(pref.substr(0, eq)), "wait")) return;
    std::string_view value = trim(pref.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    std::uint64_t seconds = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
    if (ec == std::errc() && end == value.data() + value.size() && !out) out = seconds;
  });
  return out;
}

bool bearer_token_valid(std::string_view authorization, const std::vector<std::string>& tokens) {
  authorization = trim(authorization);
  constexpr std::string_view scheme = "bearer";
  if (authorization.size() <= scheme.size() ||
      !iequals(authorization.substr(0, scheme.size()), scheme) ||
      (authorization[scheme.size()] != ' ' && authorization[scheme.size()] != '\t')) {
    return false;
  }
  const std::string_view given = trim(authorization.substr(scheme.size()));
  // Constant time in the tokens' contents: every token is compared over the
  // whole of `given`, without an early exit, so timing tells an attacker
  // only how long their own guess was.
  unsigned match = 0;
  for (const std::string& token : tokens) {
    unsigned diff = given.size() == token.size() ? 0u : 1u;
    if (token.empty()) diff = 1;
    for (std::size_t i = 0; i < given.size(); ++i) {
      const char expected = token.empty() ? '\0' : token[i % token.size()];
      diff |= static_cast<unsigned char>(given[i] ^ expected);
    }
    match |= static_cast<unsigned>(diff == 0);
  }
  return match != 0;
}

bool origin_allowed(std::string_view origin, const std::vector<std::string>& allowed) {
  if (origin.empty()) return false;
  return std::any_of(allowed.begin(), allowed.end(),
                     [&](const std::string& a) { return a == "*" || a == origin; });
}

void add_cors(response& res, std::string_view origin, const options& opts) {
  if (opts.cors_origins.empty()) return;
  res.vary = res.vary.empty() ? "Origin" : res.vary + ", Origin";
  if (!origin_allowed(origin, opts.cors_origins)) return;
  res.cors.emplace_back("Access-Control-Allow-Origin", std::string(origin));
  res.cors.emplace_back("Access-Control-Expose-Headers", cors_expose_headers);
}

const options& default_options() {
  static const options defaults;
  return defaults;
}

response handle(const request& req, const catalog& jobs, bool ready, const options& opts,
                const loaded_job* loaded) {
  auto decoded = decode_target(req.target);
  if (auto* bad = std::get_if<bad_request>(&decoded)) return error_response(400, bad->detail);
  const decoded_target& target = std::get<decoded_target>(decoded);
  const route_id id = route_of_path(target.path);

  if (id == route_id::unknown) {
    response res = error_response(404, "No route for path '" + echo(target.path) + "'.");
    if (req.method == "HEAD") res.send_body = false;
    return res;
  }
  // Preflights carry no credentials, so they come before the token check.
  if (req.method == "OPTIONS") {
    response res = preflight(req, id, opts);
    res.route = id;
    return res;
  }
  if (!opts.auth_tokens.empty() && !is_probe(id) &&
      !bearer_token_valid(req.authorization, opts.auth_tokens)) {
    const bool none = trim(req.authorization).empty();
    response res = error_response(
        401, none ? "This server requires a bearer token." : "The bearer token is not valid.");
    res.www_authenticate =
        none ? R"(Bearer realm="ckptd")" : R"(Bearer realm="ckptd", error="invalid_token")";
    res.route = id;
    if (req.method == "HEAD") res.send_body = false;
    return res;
  }
  if (!method_allowed(id, req.method)) {
    response res = error_response(
        405, "Only " + std::string(methods_for_405(id)) + " is allowed on this route.");
    res.allow = methods_for_405(id);
    res.route = id;
    return res;
  }
  response res = route(req, target, id, jobs, ready, opts, loaded);
  res.route = id;
  if (req.method == "HEAD") res.send_body = false;
  return res;
}

}  // namespace ckptd::api
