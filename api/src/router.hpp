#pragma once
// Request -> response for every route, without sockets.
//
// The I/O shell parses HTTP and hands over the few request fields routing
// needs; it gets back a status, the headers that vary, and a shared body it
// writes as is. All error bodies come from error_response. What needs the
// shell's state is flagged rather than done here: holding a long-poll, the
// event stream, the metrics text.
//
// Routes (any other method gets 405 with Allow; OPTIONS answers every known
// route with 204 and Allow):
//   GET  /v1/post-training/job/artifacts?job_uuid=U   200 cached body, 404, 400
//   GET  /v1/post-training/job/status?job_uuid=U      200 cached body, 404, 400
//   GET  /v1/post-training/jobs                       200 {"data":[{"job_uuid":...}]}
//   POST /v1/post-training/job/cancel                 501 (ckptd runs no jobs)
//   POST /v1/post-training/supervised-fine-tune       501
//   POST /v1/post-training/preference-optimize        501
//        The body is read first (413 beyond max_body_bytes) and must be a
//        JSON object: 400 otherwise.
//   GET  /v1/ckptd/events[?job_uuid=U][&last_event_id=N]   Server-Sent Events
//   GET  /healthz    200 while serving
//   GET  /readyz     200 once ready, 503 before
//   GET  /metrics    Prometheus text format 0.0.4
//   GET  /openapi.json   the OpenAPI 3 document of all of the above
// GET routes answer HEAD too, except the event stream.
//
// A job whose bodies the catalog evicted still answers a matching
// If-None-Match with 304 (and holds it with "Prefer: wait") from the ETag
// kept; any other request for it is flagged for the shell to load the job
// from the store (response::load_job) and ask again with the result.
//
// Job bodies (artifacts, status, jobs list) carry a strong ETag and
// Cache-Control: no-cache; a matching If-None-Match gets 304 without a body.
// With "Prefer: wait=N" such a 304 is flagged to be held until the body
// changes or N seconds pass (N capped at options.max_wait). Bodies of
// gzip_min_bytes or more are sent gzip-compressed when Accept-Encoding allows
// (Vary: Accept-Encoding; the gzip ETag ends in "-gz"), compressed on the
// first such request for each version of the body.
//
// With options.auth_tokens, every route but /healthz, /readyz and OPTIONS
// needs "Authorization: Bearer <token>": 401 with WWW-Authenticate otherwise.
// With options.cors_origins, an allowed Origin is echoed in
// Access-Control-Allow-Origin (see add_cors); other origins get no CORS
// headers.

#include "catalog.hpp"

#include <ckptd/api.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ckptd::api {

enum class route_id {
  artifacts,
  status,
  jobs,
  cancel,
  supervised_fine_tune,
  preference_optimize,
  events,
  healthz,
  readyz,
  metrics,
  openapi,
  unknown,
};

// The route a target's path names (the query is ignored; no decoding, so
// this is cheap enough to run before the rate limiter).
[[nodiscard]] route_id route_of(std::string_view target);
// The route's label in ckptd_http_requests_total, e.g. "artifacts".
[[nodiscard]] std::string_view route_label(route_id route);
// /healthz and /readyz: never rate limited and never behind auth, so probes
// neither see 429 nor need a token.
[[nodiscard]] bool is_probe(route_id route);

struct request {
  std::string_view method;  // as sent, e.g. "GET"
  std::string_view target;  // as sent, e.g. "/v1/post-training/jobs"
  std::string_view if_none_match;
  std::string_view accept_encoding;
  std::string_view authorization;
  std::string_view origin;
  std::string_view access_control_request_method;
  std::string_view prefer;
  std::string_view last_event_id;
  std::string_view body;
};

struct response {
  unsigned status = 200;
  // Never null. For HEAD, 204 and 304 it is not sent, but HEAD still
  // announces its Content-Length.
  std::shared_ptr<const std::string> body;
  // Sent right after *body, and kept alive by whatever keeps *body alive: a
  // job's status body shares its checkpoints array with the artifacts body
  // (see cached_body). Usually empty.
  std::string_view body_tail;
  std::string_view content_type = "application/json";
  bool send_body = true;  // false for HEAD, 204 and 304
  std::string etag;       // ETag header when not empty
  std::string_view cache_control;
  std::string_view allow;  // Allow header (405, OPTIONS) when not empty
  // Retry-After (whole seconds) and retry-after-ms when above zero (429, 503).
  std::chrono::nanoseconds retry_after{0};
  std::string_view content_encoding;  // "gzip" when the body is compressed
  std::string vary;                   // Vary header when not empty
  std::string_view www_authenticate;  // 401
  std::string preference_applied;     // Preference-Applied when not empty
  // CORS response headers, as (name, value).
  std::vector<std::pair<std::string_view, std::string>> cors;

  route_id route = route_id::unknown;
  // A 304 that asked to wait: the shell holds it until the body named by
  // wait_key changes (then answers anew) or `wait` passes.
  std::chrono::seconds wait{0};
  std::string wait_key;
  // GET /v1/ckptd/events: the shell streams events for `events_job` (empty:
  // every job) after `last_event_id` (none: from now on).
  bool events = false;
  std::string events_job;
  std::optional<std::uint64_t> last_event_id;
  // GET /metrics: the shell fills in the body.
  bool metrics = false;
  // An artifacts or status request answered from (or for) this job's bodies:
  // the shell tells the catalog it was used.
  std::string job_uuid;
  // Not an answer yet: this job's bodies were evicted, so the shell loads
  // them (see loaded_job) and calls handle() again with them.
  std::string load_job;
};

// The bodies of one job, rebuilt from the store for requests that found them
// evicted from the catalog (see response::load_job).
struct loaded_job {
  enum class outcome {
    found,   // `bodies` holds both bodies
    gone,    // the store no longer has the job: 404
    failed,  // the store could not be read: 500 (the cause is logged)
  };
  std::string job_uuid;
  outcome result = outcome::found;
  cached_job bodies;
};

// The one builder of error responses: {"status":S,"title":T,"detail":D} as
// application/json, T being the standard reason phrase of S.
[[nodiscard]] response error_response(unsigned status, std::string_view detail);
// 429 with the spec's exact body and Retry-After / retry-after-ms from `wait`.
[[nodiscard]] response rate_limited_response(std::chrono::nanoseconds wait);
// 500 with the spec's exact generic detail; the caller logs the cause.
[[nodiscard]] response internal_error_response();

// True when an If-None-Match value ("*", or a list of entity tags, weak or
// not) matches `etag` under the weak comparison RFC 9110 prescribes for it.
[[nodiscard]] bool etag_matches(std::string_view if_none_match, std::string_view etag);

// True when Accept-Encoding lets the response be gzip ("gzip", "x-gzip" or
// "*" with a q-value above 0, not overridden by "gzip;q=0").
[[nodiscard]] bool accepts_gzip(std::string_view accept_encoding);

// The N of an RFC 7240 "wait=N" preference, in seconds; nullopt when absent
// or malformed.
[[nodiscard]] std::optional<std::uint64_t> preferred_wait(std::string_view prefer);

// True when `authorization` is "Bearer <t>" with t one of `tokens`. Every
// token is compared, each in time independent of where it differs.
[[nodiscard]] bool bearer_token_valid(std::string_view authorization,
                                      const std::vector<std::string>& tokens);

// True when `origin` is one of `allowed` (or `allowed` holds "*").
[[nodiscard]] bool origin_allowed(std::string_view origin, const std::vector<std::string>& allowed);

// Adds Access-Control-Allow-Origin and -Expose-Headers for an allowed origin,
// and Vary: Origin whenever CORS is configured. Applied by the shell to every
// response it writes, errors included, so a page can read 429s and 401s.
void add_cors(response& res, std::string_view origin, const options& opts);

// The options handle() reads: auth_tokens, cors_origins, max_wait.
[[nodiscard]] const options& default_options();

// Answers one request from the catalog; `ready` drives /readyz. `loaded`,
// when not null, stands in for the catalog's evicted bodies of its job.
[[nodiscard]] response handle(const request& req, const catalog& jobs, bool ready,
                              const options& opts = default_options(),
                              const loaded_job* loaded = nullptr);

}  // namespace ckptd::api
