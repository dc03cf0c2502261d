#pragma once
// Decoding request targets ("/path?name=value&...") into a path and
// parameters, with the limits that keep a hostile target cheap.
//
// Pure functions; every rejection is a value carrying the 400 detail to send.

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ckptd::api {

// A rejected request: its detail goes into the 400 error body.
struct bad_request {
  std::string detail;
};

struct query_param {
  std::string name;
  std::string value;
};

struct decoded_target {
  std::string path;                 // percent-decoded; '+' stays '+'
  std::vector<query_param> params;  // in target order, decoded, '+' as space
};

struct target_limits {
  // Most parameters in one query. Default: 32.
  std::size_t max_params = 32;
  // Longest decoded parameter name or value. Default: 1 KiB.
  std::size_t max_param_bytes = 1024;
};

// Longest job_uuid accepted. Default: 256 bytes.
constexpr std::size_t max_job_uuid_bytes = 256;

// Splits and decodes an origin-form target ("/a/b?x=1"); the absolute form
// ("http://host/a/b?x=1") is reduced to it first, and a fragment is dropped.
// Rejected: a target not starting with '/', a malformed %-escape, a NUL byte
// (raw or %00), more than max_params parameters, an over-long name or value.
// Empty segments ("a=1&&b=2") are skipped; "name" alone has an empty value.
[[nodiscard]] std::variant<decoded_target, bad_request> decode_target(
    std::string_view target, const target_limits& limits = {});

// The one job_uuid of an artifacts-style query. Rejected, each with its own
// detail: missing, given more than once, empty, longer than max_job_uuid_bytes.
[[nodiscard]] std::variant<std::string, bad_request> job_uuid_param(const decoded_target& target);

}  // namespace ckptd::api
