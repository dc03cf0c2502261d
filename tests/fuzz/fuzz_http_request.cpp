// Fuzz target: the bytes a client sends on one connection.
//
// The input is what arrives on the socket. It goes through what server.cpp
// does with it, without the socket: Beast's request_parser with the server's
// header and body limits, fed the way Beast's read loop feeds it (whatever is
// buffered, then more), pipelined requests one after another on the same
// buffer, the 414 check, the rate limiter, and the pure router handle() (which
// decodes the query). The input is read twice: all at once, and in small
// pieces, since a header split across reads takes other paths in the parser.
//
// Invariants checked beyond the sanitizers: every response has a body; every
// error is {"status","title","detail"} with the response's status; every JSON
// body parses; a held long-poll is a 304.

#include "catalog.hpp"
#include "query.hpp"
#include "rate_limiter.hpp"
#include "router.hpp"

#include "artifacts_json.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace {

namespace api = ckptd::api;
namespace beast = boost::beast;
namespace http = beast::http;
using error_code = boost::system::error_code;

// At most this many requests are parsed from one input (a connection's
// pipelining is bounded by the socket in real life; here by this).
constexpr int max_requests_per_input = 64;
// Bytes per read in the piecewise pass; inputs above piecewise_limit_bytes
// are read in server-sized pieces instead (the parser re-scans a partial
// header on every read, so tiny pieces make large inputs quadratic).
constexpr std::size_t small_read_bytes = 7;
constexpr std::size_t piecewise_limit_bytes = 4096;
constexpr std::size_t server_read_bytes = 4096;

[[noreturn]] void invariant_failed(const char* what, const api::response& res) {
  std::fprintf(stderr, "invariant failed: %s (status %u, body %.200s)\n", what, res.status,
               res.body ? res.body->c_str() : "<null>");
  std::abort();
}

void check(bool ok, const char* what, const api::response& res) {
  if (!ok) invariant_failed(what, res);
}

void check_response(const api::response& res) {
  check(res.body != nullptr, "body is null", res);
  check(res.status >= 100 && res.status <= 599, "status out of range", res);
  check(res.wait.count() == 0 || res.status == 304, "a held request is not a 304", res);
  if (res.content_type != "application/json" || !res.content_encoding.empty() ||
      res.route == api::route_id::openapi || res.body->empty()) {
    return;
  }
  error_code ec;
  const boost::json::value body = boost::json::parse(*res.body, ec);
  check(!ec, "JSON body does not parse", res);
  if (res.status < 400) return;
  check(body.is_object(), "error body is not an object", res);
  const auto& object = body.as_object();
  check(object.size() == 3, "error body has other keys than status, title, detail", res);
  const auto* status = object.if_contains("status");
  check(status != nullptr && status->is_int64() && status->as_int64() == res.status,
        "error body's status differs from the response's", res);
  const auto* title = object.if_contains("title");
  const auto* detail = object.if_contains("detail");
  check(title != nullptr && title->is_string() && detail != nullptr && detail->is_string(),
        "error body lacks title or detail", res);
}

std::string_view header_value(const http::request<http::string_body>& req, http::field f) {
  const auto it = req.find(f);
  return it == req.end() ? std::string_view() : std::string_view(it->value());
}

std::string_view header_value(const http::request<http::string_body>& req, std::string_view name) {
  const auto it = req.find(name);
  return it == req.end() ? std::string_view() : std::string_view(it->value());
}

struct fixture {
  api::catalog jobs;
  api::options plain;    // the defaults
  api::options guarded;  // auth tokens and CORS origins set

  fixture() {
    guarded.auth_tokens = {"s3cret-token", "second"};
    guarded.cors_origins = {"https://dash.example", "http://localhost:3000"};
    publish("job-a", 3);
    publish("job b+c", 1);
    publish("big-job", 40);  // bodies above gzip_min_bytes: the gzip paths
    publish("empty", 0);
  }

  void publish(const std::string& uuid, int count) {
    std::vector<ckptd::store::checkpoint> checkpoints;
    for (int i = 0; i < count; ++i) {
      ckptd::store::checkpoint c;
      c.identifier = "checkpoint-" + std::to_string((i + 1) * 10);
      c.path = "/runs/" + uuid + "/" + c.identifier;
      c.epoch = i;
      c.step = (i + 1) * 10;
      c.created_at_ns = 1'700'000'000'000'000'000 + i;
      if (i % 2 == 0) c.metrics = ckptd::store::training_metrics{i, 1.5, 1.25, 3.49};
      checkpoints.push_back(std::move(c));
    }
    api::job_status status;
    status.status = count > 0 ? "in_progress" : "scheduled";
    auto bodies = api::job_json(uuid, std::move(checkpoints), status);
    jobs.put(uuid, api::make_cached_body(std::move(bodies.artifacts)),
             api::make_cached_body(std::move(bodies.status)));
  }
};

const fixture& the_fixture() {
  static const fixture f;
  return f;
}

// The bytes of one connection, handed to the buffer `piece` bytes per read.
class wire {
 public:
  wire(std::string_view bytes, std::size_t piece) : bytes_(bytes), piece_(piece) {}
  // Appends the next read to `buffer`; false at the end of input (EOF).
  bool read_into(beast::flat_buffer& buffer) {
    if (offered_ >= bytes_.size()) return false;
    const std::size_t n = std::min(piece_, bytes_.size() - offered_);
    auto space = buffer.prepare(n);
    std::memcpy(space.data(), bytes_.data() + offered_, n);
    buffer.commit(n);
    offered_ += n;
    return true;
  }

 private:
  std::string_view bytes_;
  std::size_t piece_;
  std::size_t offered_ = 0;
};

// Beast's read_some loop (boost/beast/http/impl/read.hpp) over `in` until
// `done` holds for the parser: put what is buffered, read more when the
// parser needs more, put_eof at the end of input.
template <class Done>
error_code parse_until(http::request_parser<http::string_body>& parser, beast::flat_buffer& buffer,
                       wire& in, Done done) {
  error_code ec;
  while (!done()) {
    if (buffer.size() == 0) {
      if (!in.read_into(buffer)) {
        if (parser.got_some()) {
          parser.put_eof(ec);
          return ec ? ec : error_code(http::error::partial_message);
        }
        return http::error::end_of_stream;
      }
    }
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) {
      ec = {};
      if (!in.read_into(buffer)) {
        if (parser.got_some()) {
          parser.put_eof(ec);
          if (ec) return ec;
          if (!done()) return http::error::partial_message;
          return {};
        }
        return http::error::end_of_stream;
      }
      continue;
    }
    if (ec) return ec;
  }
  return {};
}

unsigned status_for_parse_error(const error_code& ec) {
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  return 400;
}

// One connection's worth of requests, answered as server.cpp's serve() does.
void serve(std::string_view bytes, std::size_t piece, const api::options& opts, bool ready) {
  const fixture& f = the_fixture();
  wire in(bytes, piece);
  beast::flat_buffer buffer;
  api::rate_limiter limiter({/*rate_per_second=*/1, /*burst=*/3}, /*max_keys=*/4);
  auto now = api::rate_limiter::clock::time_point{};
  for (int n = 0; n < max_requests_per_input; ++n) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(opts.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser.body_limit(opts.max_body_bytes);
    error_code ec = parse_until(parser, buffer, in, [&] { return parser.is_header_done(); });
    if (ec) {
      if (ec != http::error::end_of_stream && ec != http::error::partial_message) {
        check_response(api::error_response(status_for_parse_error(ec), ec.message()));
      }
      return;
    }
    const auto& req = parser.get();
    const api::route_id route = api::route_of(req.target());
    (void)api::route_label(route);
    now += std::chrono::milliseconds(300);
    const std::string key(header_value(req, http::field::host));
    const auto verdict = limiter.take(key, now);
    if (!verdict.allowed && !api::is_probe(route)) {
      check_response(api::rate_limited_response(verdict.wait));
      (void)api::retry_after_seconds(verdict.wait);
    }
    if (req.target().size() > opts.max_target_bytes) return;  // 414, then close
    ec = parse_until(parser, buffer, in, [&] { return parser.is_done(); });
    if (ec) return;  // 400/413/408, then close

    // What respond() hands the router.
    api::request view;
    view.method = req.method_string();
    view.target = req.target();
    view.if_none_match = header_value(req, http::field::if_none_match);
    view.accept_encoding = header_value(req, http::field::accept_encoding);
    view.authorization = header_value(req, http::field::authorization);
    view.origin = header_value(req, http::field::origin);
    view.access_control_request_method =
        header_value(req, http::field::access_control_request_method);
    view.prefer = header_value(req, "Prefer");
    view.last_event_id = header_value(req, "Last-Event-ID");
    view.body = req.body();
    api::response res = api::handle(view, f.jobs, ready, opts);
    api::add_cors(res, view.origin, opts);
    check_response(res);

    // The query decoding on its own too, with its own limits.
    const auto decoded = api::decode_target(view.target);
    if (const auto* target = std::get_if<api::decoded_target>(&decoded)) {
      (void)api::job_uuid_param(*target);
    }
    if (!req.keep_alive()) return;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const fixture& f = the_fixture();
  serve(bytes, std::max<std::size_t>(size, 1), f.plain, /*ready=*/true);
  serve(bytes, size <= piecewise_limit_bytes ? small_read_bytes : server_read_bytes, f.guarded,
        /*ready=*/false);
  return 0;
}
