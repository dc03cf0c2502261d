#include "query.hpp"

#include <optional>

namespace ckptd::api {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `text`; nullopt on a malformed escape or a NUL byte, which
// no name, value or path here may carry (it would cut C strings short later).
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space,
                                          std::string& error) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      const int hi = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
      const int lo = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        error = "The request target contains a malformed percent-escape.";
        return std::nullopt;
      }
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0') {
      error = "The request target contains a NUL byte.";
      return std::nullopt;
    }
    out += c;
  }
  return out;
}

// "http://host:port/p?q" -> "/p?q"; anything else is returned unchanged.
std::string_view strip_absolute_form(std::string_view target) {
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() >= scheme.size()) {
      bool match = true;
      for (std::size_t i = 0; i < scheme.size(); ++i) {
        const char c = target[i];
        const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
        if (lower != scheme[i]) {
          match = false;
          break;
        }
      }
      if (match) {
        const std::string_view rest = target.substr(scheme.size());
        const std::size_t path = rest.find_first_of("/?");
        if (path == std::string_view::npos) return "/";
        if (rest[path] == '?') return target.substr(0, 0);  // "http://h?q": no path
        return rest.substr(path);
      }
    }
  }
  return target;
}

}  // namespace

std::variant<decoded_target, bad_request> decode_target(std::string_view target,
                                                        const target_limits& limits) {
  target = strip_absolute_form(target);
  if (const std::size_t hash = target.find('#'); hash != std::string_view::npos) {
    target = target.substr(0, hash);
  }
  if (target.empty() || target.front() != '/') {
    return bad_request{"The request target must be an absolute path."};
  }
  const std::size_t question = target.find('?');
  const std::string_view raw_path = target.substr(0, question);
  const std::string_view raw_query =
      question == std::string_view::npos ? std::string_view() : target.substr(question + 1);

  std::string error;
  decoded_target out;
  auto path = percent_decode(raw_path, /*plus_is_space=*/false, error);
  if (!path) return bad_request{std::move(error)};
  out.path = std::move(*path);

  std::size_t start = 0;
  while (start <= raw_query.size() && !raw_query.empty()) {
    std::size_t end = raw_query.find('&', start);
    if (end == std::string_view::npos) end = raw_query.size();
    const std::string_view segment = raw_query.substr(start, end - start);
    start = end + 1;
    if (segment.empty()) continue;
    // Counted before decoding, so a flood of parameters costs no more work.
    if (out.params.size() == limits.max_params) {
      return bad_request{"The query has more than " + std::to_string(limits.max_params) +
                         " parameters."};
    }
    const std::size_t equals = segment.find('=');
    const std::string_view raw_name = segment.substr(0, equals);
    const std::string_view raw_value =
        equals == std::string_view::npos ? std::string_view() : segment.substr(equals + 1);
    auto name = percent_decode(raw_name, /*plus_is_space=*/true, error);
    if (!name) return bad_request{std::move(error)};
    auto value = percent_decode(raw_value, /*plus_is_space=*/true, error);
    if (!value) return bad_request{std::move(error)};
    if (name->size() > limits.max_param_bytes || value->size() > limits.max_param_bytes) {
      return bad_request{"A query parameter name or value is longer than " +
                         std::to_string(limits.max_param_bytes) + " bytes."};
    }
    out.params.push_back({std::move(*name), std::move(*value)});
  }
  return out;
}

std::variant<std::string, bad_request> job_uuid_param(const decoded_target& target) {
  const query_param* found = nullptr;
  for (const query_param& p : target.params) {
    if (p.name != "job_uuid") continue;
    if (found != nullptr) {
      return bad_request{"The query parameter job_uuid must be given only once."};
    }
    found = &p;
  }
  if (found == nullptr) return bad_request{"The query parameter job_uuid is required."};
  if (found->value.empty()) return bad_request{"The query parameter job_uuid must not be empty."};
  if (found->value.size() > max_job_uuid_bytes) {
    return bad_request{"The query parameter job_uuid is longer than " +
                       std::to_string(max_job_uuid_bytes) + " bytes."};
  }
  return found->value;
}

}  // namespace ckptd::api
