// Tests of ckptd::api: the pure parts (token bucket, target decoding, JSON
// bodies, routing) with hand-built inputs, then the server over loopback.

#include <ckptd/api.hpp>
#include <ckptd/checkpoint_json.hpp>
#include <ckptd/metrics.hpp>
#include <ckptd/store.hpp>

#include "artifacts_json.hpp"
#include "catalog.hpp"
#include "events.hpp"
#include "query.hpp"
#include "rate_limiter.hpp"
#include "router.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <limits>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <variant>
#include <vector>

namespace api = ckptd::api;
namespace store = ckptd::store;
namespace json = boost::json;
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

namespace {

// ---- helpers for the pure tests -------------------------------------------

using time_point = api::rate_limiter::clock::time_point;
const time_point t0{std::chrono::hours(1000)};

json::value load_schema(const std::string& status) {
  std::ifstream in(CKPTD_SPEC_DIR "/artifacts-responses.json");
  BOOST_REQUIRE_MESSAGE(in, "cannot open " CKPTD_SPEC_DIR "/artifacts-responses.json");
  std::stringstream text;
  text << in.rdbuf();
  return json::parse(text.str()).at("responses").at(status).at("schema");
}

// Checks `v` against the subset of JSON Schema the spec uses: type
// (object/array/string/integer/number), properties, required,
// additionalProperties false, items, and format date-time. Returns the first
// violation, or an empty string.
const json::value& openapi_spec() {
  static const json::value spec = [] {
    std::ifstream in(CKPTD_SPEC_DIR "/post-training-openapi.json");
    BOOST_REQUIRE_MESSAGE(in, "cannot open " CKPTD_SPEC_DIR "/post-training-openapi.json");
    std::stringstream text;
    text << in.rdbuf();
    return json::parse(text.str());
  }();
  return spec;
}

const json::value& spec_schema(std::string_view name) {
  return openapi_spec().at("components").at("schemas").at(name);
}

std::string violation(const json::value& schema, const json::value& v, const std::string& at) {
  const json::object& s = schema.as_object();
  if (s.contains("$ref")) {
    const std::string ref(s.at("$ref").as_string());
    const std::string prefix = "#/components/schemas/";
    if (ref.rfind(prefix, 0) != 0) return at + ": checker cannot follow " + ref;
    return violation(spec_schema(ref.substr(prefix.size())), v, at);
  }
  if (s.contains("enum")) {
    const json::array& allowed = s.at("enum").as_array();
    if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
      return at + ": not one of the enum values";
    }
  }
  const std::string type = s.contains("type") ? std::string(s.at("type").as_string()) : "";
  if (type == "object") {
    if (!v.is_object()) return at + ": not an object";
    const json::object& o = v.as_object();
    static const json::object no_properties;
    const json::object& properties =
        s.contains("properties") ? s.at("properties").as_object() : no_properties;
    if (s.contains("required")) {
      for (const json::value& name : s.at("required").as_array()) {
        if (!o.contains(name.as_string())) {
          return at + ": missing required " + std::string(name.as_string());
        }
      }
    }
    const bool closed =
        s.contains("additionalProperties") && s.at("additionalProperties") == json::value(false);
    for (const auto& [key, value] : o) {
      const std::string where = at + "." + std::string(key);
      if (properties.contains(key)) {
        if (auto bad = violation(properties.at(key), value, where); !bad.empty()) return bad;
      } else if (closed) {
        return where + ": not allowed (additionalProperties false)";
      }
    }
  } else if (type == "array") {
    if (!v.is_array()) return at + ": not an array";
    std::size_t i = 0;
    for (const json::value& item : v.as_array()) {
      const std::string where = at + "[" + std::to_string(i++) + "]";
      if (auto bad = violation(s.at("items"), item, where); !bad.empty()) return bad;
    }
  } else if (type == "string") {
    if (!v.is_string()) return at + ": not a string";
    if (s.contains("format") && s.at("format") == json::value("date-time")) {
      static const std::regex rfc3339(
          R"(^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$)");
      if (!std::regex_match(std::string(v.as_string()), rfc3339)) {
        return at + ": not an RFC 3339 date-time";
      }
    }
  } else if (type == "integer") {
    if (!v.is_int64() && !v.is_uint64()) return at + ": not an integer";
  } else if (type == "number") {
    if (!v.is_number()) return at + ": not a number";
  } else if (!type.empty()) {
    return at + ": checker does not know type " + type;
  }
  return {};
}

void check_spec_schema(std::string_view name, const std::string& body) {
  json::value parsed;
  BOOST_REQUIRE_NO_THROW(parsed = json::parse(body));
  const std::string bad = violation(spec_schema(name), parsed, "$");
  BOOST_TEST(bad.empty(), bad << " in " << body);
}

void check_schema(const std::string& status, const std::string& body) {
  json::value parsed;
  BOOST_REQUIRE_NO_THROW(parsed = json::parse(body));
  const std::string bad = violation(load_schema(status), parsed, "$");
  BOOST_TEST(bad.empty(), bad << " in " << body);
}

store::checkpoint make_checkpoint(std::string path, std::int64_t epoch, std::int64_t step,
                                  std::int64_t created_at_ns) {
  store::checkpoint c;
  c.identifier = path.substr(path.rfind('/') + 1);
  c.path = std::move(path);
  c.epoch = epoch;
  c.step = step;
  c.created_at_ns = created_at_ns;
  return c;
}

api::decoded_target decoded(std::string_view target) {
  auto result = api::decode_target(target);
  if (auto* bad = std::get_if<api::bad_request>(&result)) {
    BOOST_FAIL("unexpected rejection of " << target << ": " << bad->detail);
  }
  return std::get<api::decoded_target>(result);
}

std::string rejection(std::string_view target) {
  auto result = api::decode_target(target);
  if (auto* bad = std::get_if<api::bad_request>(&result)) return bad->detail;
  return {};
}

std::string uuid_rejection(std::string_view target) {
  auto result = api::job_uuid_param(decoded(target));
  if (auto* bad = std::get_if<api::bad_request>(&result)) return bad->detail;
  return {};
}

api::response get(const api::catalog& jobs, std::string_view target, bool ready = true,
                  std::string_view if_none_match = {}, std::string_view method = "GET") {
  return api::handle({method, target, if_none_match}, jobs, ready);
}

json::value body_json(const api::response& res) { return json::parse(*res.body); }

// ---- helpers for the socket tests -----------------------------------------

// A server on 127.0.0.1 with its io_context on a thread of its own, the way
// the daemon runs it; stopped through the io_context as the header requires.
struct running_server {
  explicit running_server(api::options opts) : srv(ctx, with_test_port(std::move(opts))) {
    srv.start();
    thread = std::thread([this] { ctx.run(); });
  }
  ~running_server() {
    net::post(ctx, [this] { srv.stop(); });
    thread.join();
  }
  static api::options with_test_port(api::options opts) {
    opts.listen_host = "127.0.0.1";
    opts.listen_port = 0;
    return opts;
  }

  net::io_context ctx;
  api::server srv;
  std::thread thread;
};

api::options unlimited() {
  api::options opts;
  opts.rate_limit = 0;
  return opts;
}

struct client {
  explicit client(std::uint16_t port) : socket(ctx) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }
  void send(const std::string& raw) { net::write(socket, net::buffer(raw)); }
  http::response<http::string_body> read(bool head = false) {
    http::response_parser<http::string_body> parser;
    parser.skip(head);
    parser.body_limit(16 * 1024 * 1024);
    http::read(socket, buffer, parser);
    return parser.release();
  }
  http::response<http::string_body> get(const std::string& target,
                                        const std::string& extra_headers = {}) {
    send("GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers + "\r\n");
    return read();
  }
  // True once the server has closed the connection (after any queued input).
  bool closed_by_server() {
    http::response_parser<http::string_body> parser;
    boost::system::error_code ec;
    http::read(socket, buffer, parser, ec);
    return ec == http::error::end_of_stream || ec == net::error::eof ||
           ec == net::error::connection_reset;
  }

  net::io_context ctx;
  tcp::socket socket;
  beast::flat_buffer buffer;
};

// Calls `done` until it returns true or a generous deadline passes; the
// caller's assertions then tell which.
template <typename Predicate>
void poll_until(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
}

std::string header(const http::response<http::string_body>& res, std::string_view name) {
  const auto it = res.find(name);
  return it == res.end() ? std::string("<absent>") : std::string(it->value());
}

void check_error_body(const http::response<http::string_body>& res, unsigned status) {
  BOOST_TEST(res.result_int() == status);
  BOOST_TEST(header(res, "Content-Type") == "application/json");
  const json::value body = json::parse(res.body());
  BOOST_TEST(body.at("status").as_int64() == status);
  BOOST_TEST(body.as_object().size() == 3u);
  BOOST_TEST(!body.at("title").as_string().empty());
  BOOST_TEST(!body.at("detail").as_string().empty());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(api_tests)

// ---- token bucket ---------------------------------------------------------

BOOST_AUTO_TEST_CASE(bucket_allows_burst_then_refuses) {
  api::rate_limiter limiter({/*rate_per_second=*/2, /*burst=*/3}, 100);
  for (int i = 0; i < 3; ++i) BOOST_TEST(limiter.take("10.0.0.1", t0).allowed);
  const auto refused = limiter.take("10.0.0.1", t0);
  BOOST_TEST(!refused.allowed);
  BOOST_TEST(refused.wait.count() == std::chrono::nanoseconds(500ms).count());
  // Another client has its own bucket.
  BOOST_TEST(limiter.take("10.0.0.2", t0).allowed);
}

BOOST_AUTO_TEST_CASE(bucket_refills_at_rate_up_to_burst) {
  api::rate_limiter limiter({/*rate_per_second=*/2, /*burst=*/3}, 100);
  for (int i = 0; i < 3; ++i) BOOST_TEST(limiter.take("a", t0).allowed);
  BOOST_TEST(!limiter.take("a", t0 + 499ms).allowed);
  BOOST_TEST(limiter.take("a", t0 + 500ms).allowed);
  BOOST_TEST(!limiter.take("a", t0 + 500ms).allowed);
  // A long pause refills to the burst and no further.
  const time_point later = t0 + 1h;
  for (int i = 0; i < 3; ++i) BOOST_TEST(limiter.take("a", later).allowed);
  BOOST_TEST(!limiter.take("a", later).allowed);
}

BOOST_AUTO_TEST_CASE(bucket_wait_and_retry_after_round_up) {
  api::rate_limiter limiter({/*rate_per_second=*/0.4, /*burst=*/1}, 100);
  BOOST_TEST(limiter.take("a", t0).allowed);
  const auto refused = limiter.take("a", t0);
  BOOST_TEST(!refused.allowed);
  BOOST_TEST(refused.wait.count() == std::chrono::nanoseconds(2500ms).count());
  BOOST_TEST(api::retry_after_seconds(refused.wait) == 3);
  BOOST_TEST(api::retry_after_milliseconds(refused.wait) == 2500);

  const auto almost = limiter.take("a", t0 + 2499ms + 999999ns);
  BOOST_TEST(!almost.allowed);
  BOOST_TEST(almost.wait.count() == 1);
  BOOST_TEST(api::retry_after_seconds(almost.wait) == 1);
  BOOST_TEST(api::retry_after_milliseconds(almost.wait) == 1);
  BOOST_TEST(limiter.take("a", t0 + 2500ms).allowed);

  BOOST_TEST(api::retry_after_seconds(0ns) == 1);
  BOOST_TEST(api::retry_after_seconds(1s) == 1);
  BOOST_TEST(api::retry_after_seconds(1s + 1ns) == 2);
  BOOST_TEST(api::retry_after_milliseconds(1ms + 1ns) == 2);
}

BOOST_AUTO_TEST_CASE(bucket_rate_zero_disables) {
  api::rate_limiter limiter({/*rate_per_second=*/0, /*burst=*/1}, 10);
  BOOST_TEST(!limiter.enabled());
  for (int i = 0; i < 1000; ++i) BOOST_TEST(limiter.take("a", t0).allowed);
  BOOST_TEST(limiter.size() == 0u);
}

BOOST_AUTO_TEST_CASE(bucket_burst_below_one_counts_as_one) {
  api::rate_limiter limiter({/*rate_per_second=*/1, /*burst=*/0.2}, 10);
  BOOST_TEST(limiter.take("a", t0).allowed);
  BOOST_TEST(!limiter.take("a", t0).allowed);
}

BOOST_AUTO_TEST_CASE(bucket_table_is_bounded_under_address_flood) {
  constexpr std::size_t bound = 1000;
  api::rate_limiter limiter({/*rate_per_second=*/1, /*burst=*/2}, bound);
  time_point now = t0;
  for (int i = 0; i < 100000; ++i) {
    const std::string address = "10." + std::to_string(i >> 16) + "." +
                                std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
    BOOST_TEST_REQUIRE(limiter.take(address, now).allowed);
    BOOST_TEST_REQUIRE(limiter.size() <= bound);
    now += 1us;
  }
  BOOST_TEST(limiter.size() == bound);
}

BOOST_AUTO_TEST_CASE(bucket_table_drops_refilled_buckets) {
  api::rate_limiter limiter({/*rate_per_second=*/10, /*burst=*/2}, 100);
  for (int i = 0; i < 50; ++i) (void)limiter.take("idle-" + std::to_string(i), t0);
  BOOST_TEST(limiter.size() == 50u);
  // Later, each take sweeps refilled buckets from the cold end.
  const time_point later = t0 + 10s;
  for (int i = 0; i < 30; ++i) BOOST_TEST(limiter.take("busy", later).allowed == (i < 2));
  BOOST_TEST(limiter.size() < 5u);
}

BOOST_AUTO_TEST_CASE(bucket_of_throttled_client_survives_other_traffic) {
  api::rate_limiter limiter({/*rate_per_second=*/0.01, /*burst=*/1}, 100);
  BOOST_TEST(limiter.take("greedy", t0).allowed);
  for (int round = 0; round < 10; ++round) {
    // Fewer other clients than the bound: the throttled bucket stays tracked.
    for (int i = 0; i < 50; ++i) (void)limiter.take("other-" + std::to_string(i), t0 + 1s);
    BOOST_TEST(!limiter.take("greedy", t0 + 1s).allowed);
  }
}

// ---- target decoding ------------------------------------------------------

BOOST_AUTO_TEST_CASE(target_decodes_path_and_params) {
  const auto t =
      decoded("/v1/post-training/job/artifacts?job_uuid=a%2Fb+c%2B&x&y=1&&z=%41%e2%82%ac");
  BOOST_TEST(t.path == "/v1/post-training/job/artifacts");
  BOOST_REQUIRE(t.params.size() == 4u);
  BOOST_TEST(t.params[0].name == "job_uuid");
  BOOST_TEST(t.params[0].value == "a/b c+");
  BOOST_TEST(t.params[1].name == "x");
  BOOST_TEST(t.params[1].value == "");
  BOOST_TEST(t.params[2].value == "1");
  BOOST_TEST(t.params[3].value == "A\xe2\x82\xac");

  BOOST_TEST(decoded("/a+b%20c").path == "/a+b c");  // '+' is a space only in the query
  BOOST_TEST(decoded("/healthz?").params.empty());
  BOOST_TEST(decoded("/x?a=1#frag").params.at(0).value == "1");
  BOOST_TEST(decoded("http://localhost:8321/v1/post-training/jobs?a=b").path ==
             "/v1/post-training/jobs");
  BOOST_TEST(decoded("HTTP://host").path == "/");
  BOOST_TEST(decoded("/x?k%3D=v%3D").params.at(0).name == "k=");
}

BOOST_AUTO_TEST_CASE(target_rejects_malformed_escapes_and_nul) {
  BOOST_TEST(rejection("/x?a=%").find("percent-escape") != std::string::npos);
  BOOST_TEST(rejection("/x?a=%4").find("percent-escape") != std::string::npos);
  BOOST_TEST(rejection("/x?a=%zz").find("percent-escape") != std::string::npos);
  BOOST_TEST(rejection("/x%g0").find("percent-escape") != std::string::npos);
  BOOST_TEST(rejection("/x?a=%00").find("NUL") != std::string::npos);
  BOOST_TEST(rejection(std::string_view("/x?a=b\0c", 8)).find("NUL") != std::string::npos);
  BOOST_TEST(rejection("/x%00y").find("NUL") != std::string::npos);
  BOOST_TEST(!rejection("x").empty());
  BOOST_TEST(!rejection("").empty());
  BOOST_TEST(!rejection("*").empty());
}

BOOST_AUTO_TEST_CASE(target_limits_params_and_lengths) {
  std::string target = "/x?";
  for (int i = 0; i < 32; ++i) target += "p" + std::to_string(i) + "=v&";
  BOOST_TEST(decoded(target).params.size() == 32u);
  BOOST_TEST(rejection(target + "one=more").find("more than 32 parameters") != std::string::npos);
  // A flood of empty segments is not a flood of parameters.
  BOOST_TEST(decoded("/x?" + std::string(5000, '&') + "a=1").params.size() == 1u);

  BOOST_TEST(rejection("/x?a=" + std::string(1024, 'v')).empty());
  BOOST_TEST(rejection("/x?a=" + std::string(1025, 'v')).find("longer than 1024") !=
             std::string::npos);
  BOOST_TEST(rejection("/x?" + std::string(1025, 'n') + "=1").find("longer than 1024") !=
             std::string::npos);
  // The limit is on decoded bytes: 1024 escaped bytes are fine.
  std::string escaped;
  for (int i = 0; i < 1024; ++i) escaped += "%41";
  BOOST_TEST(rejection("/x?a=" + escaped).empty());
}

BOOST_AUTO_TEST_CASE(job_uuid_param_rules) {
  auto ok = api::job_uuid_param(decoded("/a?other=1&job_uuid=job%2D1"));
  BOOST_REQUIRE(std::holds_alternative<std::string>(ok));
  BOOST_TEST(std::get<std::string>(ok) == "job-1");

  BOOST_TEST(uuid_rejection("/a").find("required") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuidx=1").find("required") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuid=").find("empty") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuid").find("empty") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuid=1&job_uuid=1").find("only once") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuid=1&job_uuid=").find("only once") != std::string::npos);
  BOOST_TEST(uuid_rejection("/a?job_uuid=" + std::string(256, 'u')).empty());
  BOOST_TEST(uuid_rejection("/a?job_uuid=" + std::string(257, 'u')).find("longer than 256") !=
             std::string::npos);
}

// ---- JSON bodies ----------------------------------------------------------

BOOST_AUTO_TEST_CASE(utf8_repair) {
  BOOST_TEST(api::to_valid_utf8("plain ascii") == "plain ascii");
  BOOST_TEST(api::to_valid_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
             "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  const std::string fffd = "\xef\xbf\xbd";
  BOOST_TEST(api::to_valid_utf8("a\xff"
                                "b") == "a" + fffd + "b");
  BOOST_TEST(api::to_valid_utf8("a\x80\x80"
                                "b") == "a" + fffd + fffd + "b");
  BOOST_TEST(api::to_valid_utf8("\xc0\xaf") == fffd + fffd);                        // overlong '/'
  BOOST_TEST(api::to_valid_utf8("\xed\xa0\x80") == fffd + fffd + fffd);             // surrogate
  BOOST_TEST(api::to_valid_utf8("\xf4\x90\x80\x80") == fffd + fffd + fffd + fffd);  // > U+10FFFF
  BOOST_TEST(api::to_valid_utf8("x\xe2\x82") == "x" + fffd);  // truncated: one replacement
  BOOST_TEST(api::to_valid_utf8("\xe2\x82x") == fffd + "x");
}

BOOST_AUTO_TEST_CASE(rfc3339_times) {
  BOOST_TEST(api::rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z");
  BOOST_TEST(api::rfc3339_utc(1795946918123456789) == "2026-11-29T10:08:38.123456Z");
  BOOST_TEST(api::rfc3339_utc(-1) == "1969-12-31T23:59:59.999999Z");
  BOOST_TEST(api::rfc3339_utc(951782400000000000) == "2000-02-29T00:00:00.000000Z");
  BOOST_TEST(api::rfc3339_utc(std::numeric_limits<std::int64_t>::max()) ==
             "2262-04-11T23:47:16.854775Z");
}

BOOST_AUTO_TEST_CASE(artifacts_body_exact_bytes) {
  auto c = make_checkpoint("/runs/job-1/epoch_0", 0, -1, 1795946918123456789);
  c.metrics = store::training_metrics{0, 1.5, 2.25, 3};
  const std::string body = api::artifacts_json("job-1", {c});
  BOOST_TEST(body == R"({"job_uuid":"job-1","checkpoints":[{"identifier":"epoch_0",)"
                     R"("created_at":"2026-11-29T10:08:38.123456Z","epoch":0,)"
                     R"("post_training_job_id":"job-1","path":"/runs/job-1/epoch_0",)"
                     R"("training_metrics":{"epoch":0,"train_loss":1.5,"validation_loss":2.25,)"
                     R"("perplexity":3.0}}]})");
  check_schema("200", body);
  const json::value parsed = json::parse(body);
  BOOST_TEST(
      parsed.at("checkpoints").at(0).at("training_metrics").at("validation_loss").as_double() ==
      2.25);
}

BOOST_AUTO_TEST_CASE(artifacts_body_matches_schema_with_and_without_metrics) {
  std::vector<store::checkpoint> cps;
  cps.push_back(make_checkpoint("/r/j/a", 1, 10, 1));
  auto with = make_checkpoint("/r/j/b", 2, 20, 2);
  with.metrics = store::training_metrics{2, 0.1, 0.2, 1.2};
  cps.push_back(with);
  check_schema("200", api::artifacts_json("j", cps));
  check_schema("200", api::artifacts_json("j", {}));
  BOOST_TEST(api::artifacts_json("j", {}) == R"({"job_uuid":"j","checkpoints":[]})");

  const json::value parsed = json::parse(api::artifacts_json("j", cps));
  BOOST_TEST(!parsed.at("checkpoints").at(0).as_object().contains("training_metrics"));
  BOOST_TEST(parsed.at("checkpoints").at(1).at("training_metrics").at("epoch").as_int64() == 2);
  for (const auto& item : parsed.at("checkpoints").as_array()) {
    BOOST_TEST(item.at("post_training_job_id").as_string() == "j");
  }
}

BOOST_AUTO_TEST_CASE(artifacts_body_omits_non_finite_metrics) {
  for (double bad : {std::nan(""), std::numeric_limits<double>::infinity(),
                     -std::numeric_limits<double>::infinity()}) {
    std::vector<store::checkpoint> cps(3, make_checkpoint("/r/j/x", 0, -1, 0));
    cps[0].metrics = store::training_metrics{0, bad, 1, 1};
    cps[1].metrics = store::training_metrics{0, 1, bad, 1};
    cps[2].metrics = store::training_metrics{0, 1, 1, bad};
    const std::string body = api::artifacts_json("j", cps);
    check_schema("200", body);
    const json::value parsed = json::parse(body);
    for (const auto& item : parsed.at("checkpoints").as_array()) {
      BOOST_TEST(!item.as_object().contains("training_metrics"));
    }
  }
}

BOOST_AUTO_TEST_CASE(artifacts_body_is_ordered) {
  std::vector<store::checkpoint> cps = {
      make_checkpoint("/r/e2", 2, -1, 5),      make_checkpoint("/r/e1s20", 1, 20, 1),
      make_checkpoint("/r/e1s10b", 1, 10, 7),  make_checkpoint("/r/e1s10a", 1, 10, 7),
      make_checkpoint("/r/e1s10t3", 1, 10, 3), make_checkpoint("/r/e0", 0, 99, 9),
  };
  const json::value parsed = json::parse(api::artifacts_json("j", cps));
  std::vector<std::string> order;
  for (const auto& item : parsed.at("checkpoints").as_array()) {
    order.emplace_back(item.at("identifier").as_string());
  }
  const std::vector<std::string> expected = {"e0", "e1s10t3", "e1s10a", "e1s10b", "e1s20", "e2"};
  BOOST_TEST(order == expected, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(artifacts_body_is_valid_json_for_odd_bytes) {
  auto c = make_checkpoint("/r/j/bad\xff\xfe name \"quoted\"\n\x01", 0, -1, 0);
  c.identifier = "bad\xff\xfe";
  const std::string body = api::artifacts_json("j\xc0", {c});
  json::value parsed;
  BOOST_REQUIRE_NO_THROW(parsed = json::parse(body));  // Boost.JSON rejects invalid UTF-8
  BOOST_TEST(parsed.at("job_uuid").as_string() == "j\xef\xbf\xbd");
  BOOST_TEST(parsed.at("checkpoints").at(0).at("path").as_string() ==
             "/r/j/bad\xef\xbf\xbd\xef\xbf\xbd name \"quoted\"\n\x01");
  check_schema("200", body);
}

BOOST_AUTO_TEST_CASE(jobs_body_shape) {
  BOOST_TEST(api::jobs_json({}) == R"({"data":[]})");
  BOOST_TEST(api::jobs_json({"a", "b"}) == R"({"data":[{"job_uuid":"a"},{"job_uuid":"b"}]})");
}

// ---- error bodies and routing ---------------------------------------------

BOOST_AUTO_TEST_CASE(error_bodies_are_exact) {
  const auto limited = api::rate_limited_response(2500ms);
  BOOST_TEST(limited.status == 429u);
  BOOST_TEST(*limited.body ==
             R"({"status":429,"title":"Too Many Requests",)"
             R"("detail":"You have exceeded the rate limit. Please try again later."})");
  BOOST_TEST(limited.retry_after.count() == std::chrono::nanoseconds(2500ms).count());
  BOOST_TEST(limited.content_type == "application/json");
  check_schema("429", *limited.body);

  const auto internal = api::internal_error_response();
  BOOST_TEST(internal.status == 500u);
  BOOST_TEST(*internal.body ==
             R"({"status":500,"title":"Internal Server Error",)"
             R"("detail":"An unexpected error occurred. Our team has been notified."})");
  check_schema("500", *internal.body);

  const auto bad = api::error_response(400, "The request was invalid or malformed");
  BOOST_TEST(
      *bad.body ==
      R"({"status":400,"title":"Bad Request","detail":"The request was invalid or malformed"})");
  check_schema("400", *bad.body);
  check_schema("400", *api::error_response(400, "odd \xff bytes \"here\"").body);
}

BOOST_AUTO_TEST_CASE(etag_comparison) {
  BOOST_TEST(api::etag_matches("\"abc\"", "\"abc\""));
  BOOST_TEST(api::etag_matches("W/\"abc\"", "\"abc\""));
  BOOST_TEST(api::etag_matches("\"x\", \"abc\"", "\"abc\""));
  BOOST_TEST(api::etag_matches(" * ", "\"abc\""));
  BOOST_TEST(!api::etag_matches("\"abcd\"", "\"abc\""));
  BOOST_TEST(!api::etag_matches("abc", "\"abc\""));
  BOOST_TEST(!api::etag_matches("", "\"abc\""));
}

BOOST_AUTO_TEST_CASE(catalog_keeps_bodies_and_job_list) {
  api::catalog jobs;
  BOOST_TEST(jobs.jobs()->bytes == R"({"data":[]})");
  const auto g0 = jobs.generation();
  BOOST_TEST(jobs.put("b", api::make_cached_body("B1"), api::make_cached_body("SB1")));
  BOOST_TEST(jobs.put("a", api::make_cached_body("A1"), api::make_cached_body("SA1")));
  BOOST_TEST(jobs.jobs()->bytes == R"({"data":[{"job_uuid":"a"},{"job_uuid":"b"}]})");
  const auto list = jobs.jobs();
  BOOST_TEST(!jobs.put("a", api::make_cached_body("A2"), api::make_cached_body("SA2")));
  BOOST_TEST(jobs.jobs() == list);  // same set of jobs: the list is not rebuilt
  BOOST_TEST(jobs.artifacts("a")->bytes == "A2");
  BOOST_TEST(jobs.status("a")->bytes == "SA2");
  BOOST_TEST(jobs.generation() == g0 + 3);
  BOOST_TEST(jobs.erase("b"));
  BOOST_TEST(!jobs.erase("b"));
  BOOST_TEST(jobs.artifacts("b") == nullptr);
  BOOST_TEST(jobs.status("b") == nullptr);
  BOOST_TEST(jobs.jobs()->bytes == R"({"data":[{"job_uuid":"a"}]})");

  const auto x1 = api::make_cached_body("same");
  const auto x2 = api::make_cached_body("same");
  const auto y = api::make_cached_body("other");
  BOOST_TEST(x1->etag == x2->etag);
  BOOST_TEST(x1->etag != y->etag);
  BOOST_TEST(x1->etag.front() == '"');
  BOOST_TEST(x1->etag.back() == '"');
}

BOOST_AUTO_TEST_CASE(router_answers) {
  api::catalog jobs;
  const std::string body = api::artifacts_json("job-1", {make_checkpoint("/r/a", 0, -1, 0)});
  jobs.put("job-1", api::make_cached_body(body), api::make_cached_body("{}"));

  auto ok = get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1");
  BOOST_TEST(ok.status == 200u);
  BOOST_TEST(*ok.body == body);
  BOOST_TEST(ok.send_body);
  BOOST_TEST(ok.content_type == "application/json");
  BOOST_TEST(ok.cache_control == "no-cache");
  BOOST_TEST(!ok.etag.empty());
  check_schema("200", *ok.body);

  auto not_modified = get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1", true, ok.etag);
  BOOST_TEST(not_modified.status == 304u);
  BOOST_TEST(!not_modified.send_body);
  BOOST_TEST(not_modified.etag == ok.etag);
  auto stale = get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1", true, "\"old\"");
  BOOST_TEST(stale.status == 200u);

  auto head = get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1", true, {}, "HEAD");
  BOOST_TEST(head.status == 200u);
  BOOST_TEST(!head.send_body);
  BOOST_TEST(head.body->size() == body.size());

  auto missing = get(jobs, "/v1/post-training/job/artifacts");
  BOOST_TEST(missing.status == 400u);
  check_schema("400", *missing.body);
  BOOST_TEST(body_json(missing).at("detail").as_string().find("job_uuid") != json::string::npos);
  BOOST_TEST(get(jobs, "/v1/post-training/job/artifacts?job_uuid=").status == 400u);
  BOOST_TEST(get(jobs, "/v1/post-training/job/artifacts?job_uuid=a&job_uuid=b").status == 400u);
  BOOST_TEST(get(jobs, "/v1/post-training/job/artifacts?job_uuid=%zz").status == 400u);

  auto unknown = get(jobs, "/v1/post-training/job/artifacts?job_uuid=nope");
  BOOST_TEST(unknown.status == 404u);
  BOOST_TEST(body_json(unknown).at("title").as_string() == "Not Found");
  check_schema("default", *unknown.body);

  auto post = get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1", true, {}, "POST");
  BOOST_TEST(post.status == 405u);
  BOOST_TEST(post.allow == "GET, HEAD");
  BOOST_TEST(body_json(post).at("title").as_string() == "Method Not Allowed");
  BOOST_TEST(get(jobs, "/nowhere", true, {}, "DELETE").status == 404u);

  auto list = get(jobs, "/v1/post-training/jobs");
  BOOST_TEST(list.status == 200u);
  BOOST_TEST(*list.body == R"({"data":[{"job_uuid":"job-1"}]})");
  BOOST_TEST(get(jobs, "/v1/post-training/jobs", true, list.etag).status == 304u);

  BOOST_TEST(get(jobs, "/healthz", false).status == 200u);
  auto not_ready = get(jobs, "/readyz", false);
  BOOST_TEST(not_ready.status == 503u);
  BOOST_TEST(body_json(not_ready).at("status").as_int64() == 503);
  BOOST_TEST(get(jobs, "/readyz", true).status == 200u);

  auto nowhere = get(jobs, "/v1/post-training/job/artifacts/");
  BOOST_TEST(nowhere.status == 404u);
  check_schema("default", *nowhere.body);
}

// ---- the server over loopback ---------------------------------------------

BOOST_AUTO_TEST_CASE(server_logs_its_port, *boost::unit_test::timeout(60)) {
  net::io_context ctx;
  api::options opts = running_server::with_test_port(unlimited());
  api::server srv(ctx, opts);
  // The black-box tests read the port from this line on stderr.
  std::FILE* capture = std::tmpfile();
  BOOST_REQUIRE(capture != nullptr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(::fileno(capture), STDERR_FILENO);
  srv.start();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::rewind(capture);
  std::string logged(4096, '\0');
  logged.resize(std::fread(logged.data(), 1, logged.size(), capture));
  std::fclose(capture);
  BOOST_TEST(srv.port() != 0);
  BOOST_TEST(logged.find("listening on 127.0.0.1:" + std::to_string(srv.port()) + "\n") !=
                 std::string::npos,
             logged);
  srv.stop();
  ctx.run();
}

BOOST_AUTO_TEST_CASE(server_bind_failure_throws, *boost::unit_test::timeout(60)) {
  running_server first(unlimited());
  net::io_context ctx;
  api::options opts = unlimited();
  opts.listen_host = "127.0.0.1";
  opts.listen_port = first.srv.port();
  api::server second(ctx, opts);
  BOOST_CHECK_THROW(second.start(), std::system_error);
}

BOOST_AUTO_TEST_CASE(server_keep_alive_and_publish, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  client c(s.srv.port());

  auto health = c.get("/healthz");
  BOOST_TEST(health.result_int() == 200);
  BOOST_TEST(header(health, "Server") == "ckptd");
  BOOST_TEST(health.keep_alive());
  auto missing = c.get("/v1/post-training/job/artifacts?job_uuid=job-1");  // same connection
  check_error_body(missing, 404);

  auto cp = make_checkpoint("/runs/job-1/epoch_0", 0, -1, 1795946918123456789);
  s.srv.publish("job-1", {cp});
  http::response<http::string_body> found;
  poll_until([&] {
    found = c.get("/v1/post-training/job/artifacts?job_uuid=job-1");
    return found.result_int() != 404;
  });
  BOOST_TEST(found.result_int() == 200);
  BOOST_TEST(found.body() == api::artifacts_json("job-1", {cp}));
  BOOST_TEST(header(found, "Content-Type") == "application/json");
  BOOST_TEST(header(found, "Content-Length") == std::to_string(found.body().size()));
  BOOST_TEST(header(found, "Cache-Control") == "no-cache");
  check_schema("200", found.body());

  const std::string etag = header(found, "ETag");
  auto cached =
      c.get("/v1/post-training/job/artifacts?job_uuid=job-1", "If-None-Match: " + etag + "\r\n");
  BOOST_TEST(cached.result_int() == 304);
  BOOST_TEST(cached.body().empty());
  BOOST_TEST(header(cached, "ETag") == etag);

  c.send("HEAD /v1/post-training/job/artifacts?job_uuid=job-1 HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = c.read(/*head=*/true);
  BOOST_TEST(head.result_int() == 200);
  BOOST_TEST(header(head, "Content-Length") == std::to_string(found.body().size()));

  // The connection is still in step after 304 and HEAD.
  auto list = c.get("/v1/post-training/jobs");
  BOOST_TEST(list.body() == R"({"data":[{"job_uuid":"job-1"}]})");

  s.srv.forget("job-1");
  http::response<http::string_body> gone;
  poll_until([&] {
    gone = c.get("/v1/post-training/job/artifacts?job_uuid=job-1");
    return gone.result_int() != 200;
  });
  check_error_body(gone, 404);
}

BOOST_AUTO_TEST_CASE(server_answers_pipelined_requests_in_order, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  client c(s.srv.port());
  c.send(
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /v1/post-training/jobs HTTP/1.1\r\nHost: x\r\n\r\n"
      "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      "GET /v1/post-training/job/artifacts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  auto r1 = c.read();
  auto r2 = c.read();
  auto r3 = c.read();
  auto r4 = c.read();
  auto r5 = c.read();
  BOOST_TEST(r1.result_int() == 200);
  BOOST_TEST(r1.body() == R"({"status":"ok"})");
  BOOST_TEST(r2.result_int() == 200);
  BOOST_TEST(r2.body() == R"({"data":[]})");
  check_error_body(r3, 503);
  check_error_body(r4, 405);
  BOOST_TEST(header(r4, "Allow") == "GET, HEAD");
  check_error_body(r5, 400);
  BOOST_TEST(!r5.keep_alive());
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_CASE(server_set_ready_flips_readyz, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  client c(s.srv.port());
  check_error_body(c.get("/readyz"), 503);
  s.srv.set_ready(true);
  auto ready = c.get("/readyz");
  BOOST_TEST(ready.result_int() == 200);
  BOOST_TEST(ready.body() == R"({"status":"ready"})");
  s.srv.set_ready(false);
  BOOST_TEST(c.get("/readyz").result_int() == 503);
}

BOOST_AUTO_TEST_CASE(server_rate_limits_with_retry_after, *boost::unit_test::timeout(60)) {
  api::options opts;
  opts.rate_limit = 0.01;  // one token per 100 s: nothing refills during the test
  opts.rate_burst = 2;
  running_server s(opts);
  client c(s.srv.port());
  BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 200);
  BOOST_TEST(c.get("/metrics").result_int() == 200);
  for (int i = 0; i < 2; ++i) {
    auto limited = c.get("/v1/post-training/jobs");
    BOOST_TEST(limited.result_int() == 429);
    BOOST_TEST(limited.body() ==
               R"({"status":429,"title":"Too Many Requests",)"
               R"("detail":"You have exceeded the rate limit. Please try again later."})");
    BOOST_TEST(header(limited, "Content-Type") == "application/json");
    const long retry_after = std::stol(header(limited, "Retry-After"));
    const long retry_after_ms = std::stol(header(limited, "retry-after-ms"));
    BOOST_TEST(retry_after >= 1);
    BOOST_TEST(retry_after <= 100);
    BOOST_TEST(retry_after_ms >= 1);
    BOOST_TEST(retry_after_ms <= 100000);
    BOOST_TEST((retry_after - 1) * 1000 < retry_after_ms);
    BOOST_TEST(limited.keep_alive());
  }
  // HEAD gets the headers only; the connection stays in step.
  c.send("HEAD /v1/post-training/jobs HTTP/1.1\r\nHost: x\r\n\r\n");
  auto head = c.read(/*head=*/true);
  BOOST_TEST(head.result_int() == 429);
  BOOST_TEST(head.body().empty());
  BOOST_TEST(c.get("/openapi.json").result_int() == 429);
  // Probes are never limited.
  for (int i = 0; i < 5; ++i) {
    BOOST_TEST(c.get("/healthz").result_int() == 200);
    BOOST_TEST(c.get("/readyz").result_int() == 503);
  }
  // A second connection from the same address shares the bucket.
  client other(s.srv.port());
  BOOST_TEST(other.get("/v1/post-training/jobs").result_int() == 429);
}

BOOST_AUTO_TEST_CASE(server_enforces_size_limits, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_target_bytes = 1024;
  opts.max_header_bytes = 4096;
  opts.max_body_bytes = 100;
  running_server s(opts);

  {
    client c(s.srv.port());
    auto res = c.get("/v1/post-training/jobs?pad=" + std::string(2000, 'x'));
    check_error_body(res, 414);
    BOOST_TEST(!res.keep_alive());
    BOOST_TEST(c.closed_by_server());
  }
  {
    client c(s.srv.port());
    auto res = c.get("/healthz", "X-Padding: " + std::string(8000, 'p') + "\r\n");
    check_error_body(res, 431);
    BOOST_TEST(c.closed_by_server());
  }
  {
    client c(s.srv.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" +
           std::string(101, 'b'));
    check_error_body(c.read(), 413);
    BOOST_TEST(c.closed_by_server());
  }
  {
    client c(s.srv.port());
    c.send("NOT HTTP AT ALL\r\n\r\n");
    auto res = c.read();
    check_error_body(res, 400);
    BOOST_TEST(c.closed_by_server());
  }
  {
    // A body within the limit is read and ignored; the connection stays usable.
    client c(s.srv.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" +
           std::string(100, 'b'));
    BOOST_TEST(c.read().result_int() == 200);
    BOOST_TEST(c.get("/healthz").result_int() == 200);
  }
}

BOOST_AUTO_TEST_CASE(server_turns_away_connections_beyond_limit, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_connections = 1;
  running_server s(opts);
  client first(s.srv.port());
  BOOST_TEST(first.get("/healthz").result_int() == 200);
  client second(s.srv.port());
  second.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  auto refused = second.read();
  check_error_body(refused, 503);
  BOOST_TEST(!refused.keep_alive());
  BOOST_TEST(second.closed_by_server());
  BOOST_TEST(first.get("/healthz").result_int() == 200);
}

BOOST_AUTO_TEST_CASE(server_closes_idle_connections, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.idle_timeout = 50ms;
  running_server s(opts);
  client c(s.srv.port());
  BOOST_TEST(c.get("/healthz").result_int() == 200);
  BOOST_TEST(c.closed_by_server());  // eventually, once idle_timeout has passed
}

BOOST_AUTO_TEST_CASE(server_stop_closes_open_connections, *boost::unit_test::timeout(60)) {
  auto s = std::make_unique<running_server>(unlimited());
  client c(s->srv.port());
  BOOST_TEST(c.get("/healthz").result_int() == 200);
  s.reset();  // stop() and the io_context's run() returns: nothing is left pending
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_SUITE_END()
