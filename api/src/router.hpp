#pragma once
// Request -> response for every route, without sockets.
//
// The I/O shell parses HTTP and hands over the few request fields routing
// needs; it gets back a status, the headers that vary, and a shared body it
// writes as is. All error bodies come from error_response.
//
// Routes (GET and HEAD; any other method gets 405 with Allow):
//   /v1/post-training/job/artifacts?job_uuid=U  200 job's cached body, 404, 400
//   /v1/post-training/jobs                      200 {"data":[{"job_uuid":...}]}
//   /healthz                                    200 while serving
//   /readyz                                     200 once ready, 503 before
// Job bodies carry a strong ETag and Cache-Control: no-cache, and a matching
// If-None-Match gets 304 without a body.

#include "catalog.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace ckptd::api {

struct request {
  std::string_view method;  // as sent, e.g. "GET"
  std::string_view target;  // as sent, e.g. "/v1/post-training/jobs"
  std::string_view if_none_match;
};

struct response {
  unsigned status = 200;
  // Never null. For HEAD and 304 it is not sent, but HEAD still announces its
  // Content-Length.
  std::shared_ptr<const std::string> body;
  std::string_view content_type = "application/json";
  bool send_body = true;  // false for HEAD and 304
  std::string etag;       // ETag header when not empty
  std::string_view cache_control;
  std::string_view allow;  // Allow header (405) when not empty
  // Retry-After (whole seconds) and retry-after-ms when above zero (429).
  std::chrono::nanoseconds retry_after{0};
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

// Answers one request from the catalog; `ready` drives /readyz.
[[nodiscard]] response handle(const request& req, const catalog& jobs, bool ready);

}  // namespace ckptd::api
