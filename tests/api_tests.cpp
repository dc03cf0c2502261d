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
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
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
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <regex>
#include <set>
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

void check_error_body_of(const api::response& res, unsigned status) {
  BOOST_TEST(res.status == status);
  BOOST_TEST(res.content_type == "application/json");
  const json::value body = body_json(res);
  BOOST_TEST(body.at("status").as_int64() == status);
  BOOST_TEST(body.as_object().size() == 3u);
}

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

// ---- helpers for the newer routes -----------------------------------------

api::response call(const api::catalog& jobs, api::request req,
                   const api::options& opts = api::default_options()) {
  return api::handle(req, jobs, /*ready=*/true, opts);
}

std::string header_of(const api::response& res, std::string_view name) {
  for (const auto& [n, v] : res.cors) {
    if (n == name) return v;
  }
  return "<absent>";
}

// gzip (RFC 1952) back to the original bytes; a failure fails the test.
std::string gunzip(const std::string& compressed) {
  z_stream z{};
  BOOST_REQUIRE(inflateInit2(&z, 15 + 16) == Z_OK);
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  z.avail_in = static_cast<uInt>(compressed.size());
  std::string out;
  char chunk[16384];
  int rc = Z_OK;
  while (rc == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(chunk, sizeof chunk - z.avail_out);
  }
  inflateEnd(&z);
  BOOST_TEST(rc == Z_STREAM_END);
  return out;
}

// A job with enough checkpoints that its bodies pass gzip_min_bytes.
std::vector<store::checkpoint> many_checkpoints(int n, int offset = 0) {
  std::vector<store::checkpoint> cps;
  for (int i = 0; i < n; ++i) {
    auto c = make_checkpoint("/runs/big/checkpoint-" + std::to_string(100 * (i + offset)),
                             i + offset, 100 * (i + offset), 1795946918123456789 + i);
    c.metrics = store::training_metrics{i + offset, 2.59133 - i * 0.01, 2.7, 14.9};
    cps.push_back(std::move(c));
  }
  return cps;
}

// Checks Prometheus text format 0.0.4 line by line: HELP/TYPE comments,
// sample syntax (names, label escapes, values), TYPE before samples, one TYPE
// per family, histograms with cumulative buckets ending at +Inf == _count.
// Returns the first problem, or an empty string.
std::string exposition_problem(const std::string& text) {
  static const std::regex name_re(R"([a-zA-Z_:][a-zA-Z0-9_:]*)");
  static const std::regex help_re(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*))");
  static const std::regex type_re(
      R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  static const std::regex sample_re(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)( -?[0-9]+)?)");
  static const std::regex label_re(
      R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$))re");
  if (text.empty() || text.back() != '\n') return "does not end with a newline";
  std::map<std::string, std::string> types;
  std::set<std::string> sampled_families;
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // family -> (le, count)
  std::map<std::string, double> counts;
  std::istringstream in(text);
  std::string line;
  int number = 0;
  auto family_of = [&](const std::string& name) {
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx = suffix;
      if (name.size() > sfx.size() &&
          name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
        const std::string base = name.substr(0, name.size() - sfx.size());
        if (types.count(base) && types[base] == "histogram") return base;
      }
    }
    return name;
  };
  auto parse_value = [](const std::string& v, double& out) {
    if (v == "+Inf") return out = HUGE_VAL, true;
    if (v == "-Inf") return out = -HUGE_VAL, true;
    if (v == "NaN") return out = NAN, true;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
    return ec == std::errc() && end == v.data() + v.size();
  };
  while (std::getline(in, line)) {
    ++number;
    const std::string where = "line " + std::to_string(number) + " '" + line + "': ";
    std::smatch m;
    if (line.empty()) continue;
    if (line[0] == '#') {
      if (line.rfind("# HELP ", 0) == 0) {
        if (!std::regex_match(line, m, help_re)) return where + "malformed HELP";
      } else if (line.rfind("# TYPE ", 0) == 0) {
        if (!std::regex_match(line, m, type_re)) return where + "malformed TYPE";
        if (types.count(m[1])) return where + "second TYPE for the family";
        if (sampled_families.count(m[1])) return where + "TYPE after samples";
        types[m[1]] = m[2];
      }
      continue;
    }
    if (!std::regex_match(line, m, sample_re)) return where + "malformed sample";
    const std::string name = m[1];
    const std::string family = family_of(name);
    if (!types.count(family)) return where + "sample without TYPE";
    sampled_families.insert(family);
    double value = 0;
    if (!parse_value(m[4], value)) return where + "malformed value";
    std::string labels = m[3];
    std::optional<double> le;
    while (!labels.empty()) {
      std::smatch lm;
      if (!std::regex_search(labels, lm, label_re) || lm.position(0) != 0) {
        return where + "malformed labels";
      }
      if (lm[1] == "le") {
        double bound = 0;
        if (!parse_value(lm[2], bound)) return where + "malformed le";
        le = bound;
      }
      labels = lm.suffix();
    }
    if (types[family] == "counter" && (value < 0 || std::isnan(value))) {
      return where + "negative counter";
    }
    if (types[family] == "histogram") {
      if (name == family + "_bucket") {
        if (!le) return where + "bucket without le";
        buckets[family].emplace_back(*le, value);
      } else if (name == family + "_count") {
        counts[family] = value;
      } else if (name != family + "_sum") {
        return where + "unexpected histogram sample";
      }
    }
  }
  for (const auto& [family, list] : buckets) {
    for (std::size_t i = 1; i < list.size(); ++i) {
      if (list[i].first <= list[i - 1].first) return family + ": le not ascending";
      if (list[i].second < list[i - 1].second) return family + ": buckets not cumulative";
    }
    if (list.empty() || !std::isinf(list.back().first)) return family + ": no +Inf bucket";
    if (!counts.count(family) || counts[family] != list.back().second) {
      return family + ": _count differs from the +Inf bucket";
    }
  }
  return {};
}

// Waits for `fd` to be readable for at most `timeout`.
bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

// One parsed Server-Sent Events frame.
struct sse_frame {
  std::string id;  // "" when absent
  std::string event;
  std::string data;
  bool comment = false;
};

// A client of GET /v1/ckptd/events: reads the response header, then de-chunks
// the body and splits it into frames as it arrives.
struct sse_client {
  sse_client(std::uint16_t port, const std::string& target, const std::string& extra_headers = {})
      : socket(ctx) {
    socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
    const std::string req =
        "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra_headers + "\r\n";
    net::write(socket, net::buffer(req));
    http::response_parser<http::empty_body> parser;
    beast::flat_buffer buffer;
    http::read_header(socket, buffer, parser);
    head = parser.get().base();
    raw = beast::buffers_to_string(buffer.data());
  }

  // Reads what arrives within `timeout`; false once the server has closed.
  bool pump(std::chrono::milliseconds timeout = 100ms) {
    if (closed) return false;
    if (!readable(socket.native_handle(), timeout)) return true;
    char data[65536];
    boost::system::error_code ec;
    const std::size_t n = socket.read_some(net::buffer(data), ec);
    if (ec) {
      closed = true;
      return false;
    }
    raw.append(data, n);
    dechunk();
    return true;
  }

  // Pumps until `done()` or the server closes or a generous deadline passes.
  template <typename Predicate>
  void until(Predicate done) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    dechunk();
    while (!done() && std::chrono::steady_clock::now() < deadline && pump()) {
    }
  }

  // The frames with an "event:" field, in order.
  std::vector<sse_frame> events() const {
    std::vector<sse_frame> out;
    for (const sse_frame& f : frames()) {
      if (!f.event.empty()) out.push_back(f);
    }
    return out;
  }

  std::vector<sse_frame> frames() const {
    std::vector<sse_frame> out;
    std::size_t start = 0;
    for (;;) {
      const std::size_t end = text.find("\n\n", start);
      if (end == std::string::npos) break;
      std::istringstream lines(text.substr(start, end - start));
      start = end + 2;
      sse_frame f;
      std::string line;
      while (std::getline(lines, line)) {
        if (line.rfind(":", 0) == 0) {
          f.comment = true;
        } else if (line.rfind("id: ", 0) == 0) {
          f.id = line.substr(4);
        } else if (line.rfind("event: ", 0) == 0) {
          f.event = line.substr(7);
        } else if (line.rfind("data: ", 0) == 0) {
          f.data += (f.data.empty() ? "" : "\n") + line.substr(6);
        }
      }
      out.push_back(std::move(f));
    }
    return out;
  }

  std::vector<std::uint64_t> event_ids() const {
    std::vector<std::uint64_t> ids;
    for (const sse_frame& f : events()) ids.push_back(std::stoull(f.id));
    return ids;
  }

  void dechunk() {
    for (;;) {
      const std::size_t line_end = raw.find("\r\n");
      if (line_end == std::string::npos) return;
      const std::size_t size = std::stoul(raw.substr(0, line_end), nullptr, 16);
      if (raw.size() < line_end + 2 + size + 2) return;
      text += raw.substr(line_end + 2, size);
      raw.erase(0, line_end + 2 + size + 2);
      if (size == 0) ended = true;
    }
  }

  net::io_context ctx;
  tcp::socket socket;
  http::response_header<> head;
  std::string raw;   // chunked bytes not yet decoded
  std::string text;  // the event stream so far
  bool closed = false;
  bool ended = false;  // the last chunk arrived
};

// A fresh folder, removed afterwards.
struct temp_dir {
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ckptd-api-XXXXXX").string();
    BOOST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

store::event make_event(std::uint64_t seq, std::string job, std::string type = "job.status") {
  store::event e;
  e.seq = seq;
  e.data =
      R"({"job_uuid":")" + job + R"(","status":"in_progress","n":)" + std::to_string(seq) + "}";
  e.job_uuid = std::move(job);
  e.type = std::move(type);
  e.at_ns = 1795946918123456789;
  return e;
}

// Writes `n` events of `job` to the index and returns them as stored.
std::vector<store::event> store_events(store::index& index, const std::string& job, int n) {
  store::job_change change;
  change.job_uuid = job;
  for (int i = 0; i < n; ++i) {
    store::event e;
    e.type = "checkpoint.created";
    e.data = R"({"job_uuid":")" + job + R"(","i":)" + std::to_string(i) + "}";
    change.events.push_back(std::move(e));
  }
  auto last = index.apply(change);
  BOOST_REQUIRE(last.has_value());
  auto written = index.events_after(*last - static_cast<std::uint64_t>(n), 100000);
  BOOST_REQUIRE(written.has_value());
  BOOST_REQUIRE(written->size() == static_cast<std::size_t>(n));
  return std::move(*written);
}

std::vector<std::uint64_t> seq_range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = first; i <= last; ++i) out.push_back(i);
  return out;
}

template <typename Predicate>
bool eventually(Predicate done) {
  poll_until(done);
  return done();
}

// Writes the job to the index with these checkpoints, replacing what it had.
void store_job(store::index& index, const std::string& uuid, std::vector<store::checkpoint> cps) {
  store::job_change change;
  change.job_uuid = uuid;
  change.remove_job = true;
  store::job record;
  record.uuid = uuid;
  record.dir = "/runs/" + uuid;
  record.status = cps.empty() ? "scheduled" : "in_progress";
  record.started_at_ns = 1795946918000000000;
  change.upsert_job = record;
  change.upserts = std::move(cps);
  BOOST_REQUIRE(index.apply(change).has_value());
}

// Hands the job to the server as the daemon does: what the index holds of it.
void publish_from(api::server& srv, const store::index& index, const std::string& uuid) {
  auto record = index.find_job(uuid);
  auto cps = index.checkpoints(uuid);
  BOOST_REQUIRE(record.has_value() && record->has_value() && cps.has_value());
  srv.publish(uuid, std::move(*cps), api::status_of(**record));
}

// A real index with a gate in front of checkpoints(): when closed for a job,
// a read of that job's checkpoints reads the store, then waits until the gate
// opens (so a test can act while a load is in flight). With fail_reads, job
// reads report io_error. Everything else goes straight to the index.
class gated_index final : public store::index {
 public:
  explicit gated_index(store::index& real) : real_(real) {}
  ~gated_index() override { open(); }
  gated_index(const gated_index&) = delete;
  gated_index& operator=(const gated_index&) = delete;

  void close_for(std::string job) {
    std::lock_guard lock(mutex_);
    closed_for_ = std::move(job);
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      closed_for_.clear();
    }
    opened_.notify_all();
  }
  [[nodiscard]] bool waiting() const { return waiting_.load(); }
  std::atomic<bool> fail_reads{false};

  boost::system::result<std::uint64_t> apply(const store::job_change& change) override {
    return real_.apply(change);
  }
  boost::system::result<void> write_out() override { return real_.write_out(); }
  boost::system::result<void> start_events_after(std::uint64_t seq) override {
    return real_.start_events_after(seq);
  }
  boost::system::result<std::vector<store::checkpoint>> checkpoints(
      std::string_view job_uuid) const override {
    if (fail_reads) return store::make_error_code(store::errc::io_error);
    auto read = real_.checkpoints(job_uuid);
    std::unique_lock lock(mutex_);
    if (closed_for_ == job_uuid) {
      waiting_ = true;
      opened_.wait(lock, [&] { return closed_for_ != job_uuid; });
      waiting_ = false;
    }
    return read;
  }
  boost::system::result<std::optional<store::job>> find_job(
      std::string_view job_uuid) const override {
    if (fail_reads) return store::make_error_code(store::errc::io_error);
    return real_.find_job(job_uuid);
  }
  boost::system::result<std::vector<store::job>> jobs() const override { return real_.jobs(); }
  boost::system::result<void> flush() override { return real_.flush(); }
  boost::system::result<std::vector<store::event>> events_after(std::uint64_t seq,
                                                                std::size_t limit) const override {
    return real_.events_after(seq, limit);
  }
  std::uint64_t last_event_seq() const override { return real_.last_event_seq(); }
  std::uint64_t first_event_seq() const override { return real_.first_event_seq(); }
  bool healthy() const override { return real_.healthy(); }

 private:
  store::index& real_;
  mutable std::mutex mutex_;
  mutable std::condition_variable opened_;
  mutable std::atomic<bool> waiting_{false};
  std::string closed_for_;
};

// A server over a real index in a fresh folder, read through a gated_index,
// with a body budget (1 byte: no body is ever kept); each job is stored with
// `checkpoints_per_job` checkpoints and published as the daemon would.
class store_backed_server {
 public:
  explicit store_backed_server(const std::vector<std::string>& jobs, std::size_t budget_bytes = 1,
                               int checkpoints_per_job = 3)
      : real_(open_index(dir_)), gate_(*real_) {
    for (const auto& uuid : jobs) store_job(*real_, uuid, many_checkpoints(checkpoints_per_job));
    api::options opts = unlimited();
    opts.event_store = &gate_;
    opts.body_cache_bytes = budget_bytes;
    server_.emplace(opts);
    for (const auto& uuid : jobs) publish_from(server_->srv, *real_, uuid);
  }
  ~store_backed_server() {
    gate_.open();  // a load held at the gate would keep the server from stopping
    server_.reset();
  }
  store_backed_server(const store_backed_server&) = delete;
  store_backed_server& operator=(const store_backed_server&) = delete;

  // The index itself, for the test's own reads and writes (the gate is the server's).
  [[nodiscard]] store::index& real() { return *real_; }
  [[nodiscard]] gated_index& gate() { return gate_; }
  [[nodiscard]] api::server& srv() { return server_->srv; }
  [[nodiscard]] std::uint16_t port() { return server_->srv.port(); }

 private:
  static std::unique_ptr<store::index> open_index(const temp_dir& dir) {
    auto opened = store::index::open(dir.path / "index");
    BOOST_REQUIRE(opened.has_value());
    return std::move(*opened);
  }
  temp_dir dir_;
  std::unique_ptr<store::index> real_;
  gated_index gate_;
  std::optional<running_server> server_;
};

// The whole body of a GET, and its ETag, for comparing two servers.
std::pair<std::string, std::string> body_and_etag(client& c, const std::string& target,
                                                  const std::string& extra_headers = {}) {
  auto res = c.get(target, extra_headers);
  BOOST_TEST(res.result_int() == 200, target);
  return {res.body(), header(res, "ETag")};
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

// append_string copies a plain ASCII run eight bytes at a time: whatever
// needs escaping or repair must be caught in every position of a word and of
// the tail. Boost.JSON reads each result back as the repaired text.
BOOST_AUTO_TEST_CASE(strings_escape_wherever_the_byte_falls) {
  const std::vector<std::string> specials{"\"", "\\", "\n", "\t", std::string(1, '\0'),
                                          "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xff",
                                          "\xe2\x82"};
  for (std::size_t length : {0u, 1u, 7u, 8u, 9u, 16u, 23u}) {
    for (std::size_t at = 0; at <= length; ++at) {
      for (const std::string& special : specials) {
        std::string text(length, 'a');
        for (std::size_t i = 0; i < length; ++i) text[i] = static_cast<char>('a' + i % 26);
        text.insert(at, special);
        std::string json;
        ckptd::json_text::append_string(json, text);
        const boost::json::value back = boost::json::parse(json);
        BOOST_TEST_CONTEXT("length " << length << ", at " << at) {
          BOOST_TEST(back.is_string());
          if (back.is_string()) {
            BOOST_TEST(std::string_view(back.as_string()) == api::to_valid_utf8(text));
          }
          // Only what JSON requires is escaped: the rest goes as it is.
          const bool escaped = special == "\"" || special == "\\" ||
                               static_cast<unsigned char>(special[0]) < 0x20;
          const bool repaired = special == "\xff" || special == "\xe2\x82";
          if (!escaped && !repaired) BOOST_TEST(json == '"' + text + '"');
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(rfc3339_times) {
  BOOST_TEST(api::rfc3339_utc(0) == "1970-01-01T00:00:00.000000Z");
  BOOST_TEST(api::rfc3339_utc(1795946918123456789) == "2026-11-29T10:08:38.123456Z");
  BOOST_TEST(api::rfc3339_utc(-1) == "1969-12-31T23:59:59.999999Z");
  BOOST_TEST(api::rfc3339_utc(951782400000000000) == "2000-02-29T00:00:00.000000Z");
  BOOST_TEST(api::rfc3339_utc(std::numeric_limits<std::int64_t>::max()) ==
             "2262-04-11T23:47:16.854775Z");
  BOOST_TEST(api::rfc3339_utc(std::numeric_limits<std::int64_t>::min()) ==
             "1677-09-21T00:12:43.145224Z");
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

BOOST_AUTO_TEST_CASE(catalog_evicts_least_recently_used_bodies) {
  const auto bodies = [](const std::string& tag) {
    return api::cached_job{api::make_cached_body("A" + tag), api::make_cached_body("S" + tag)};
  };
  const auto put = [&](api::catalog& jobs, const std::string& uuid) {
    auto b = bodies(uuid);
    return jobs.put(uuid, b.artifacts, b.status);
  };
  const std::size_t one = bodies("a").artifacts->held_bytes() + bodies("a").status->held_bytes();
  api::catalog jobs(2 * one);
  put(jobs, "a");
  put(jobs, "b");
  BOOST_TEST(jobs.held_bytes() == 2 * one);
  put(jobs, "c");  // over budget: "a", the least recently used, loses its bodies
  BOOST_TEST(jobs.held_bytes() == 2 * one);
  BOOST_TEST(jobs.artifacts("a") == nullptr);
  BOOST_TEST(jobs.status("a") == nullptr);
  const api::catalog::job_entry* a = jobs.find("a");
  BOOST_REQUIRE(a != nullptr);  // still known, with the ETags of its bodies
  BOOST_TEST(a->artifacts_etag == bodies("a").artifacts->etag);
  BOOST_TEST(a->status_etag == bodies("a").status->etag);
  BOOST_TEST(a->artifacts_size == 2u);
  BOOST_TEST(jobs.jobs()->bytes ==
             R"({"data":[{"job_uuid":"a"},{"job_uuid":"b"},{"job_uuid":"c"}]})");

  jobs.touch("b");  // a request for "b" makes "c" the least recently used
  put(jobs, "d");
  BOOST_TEST(jobs.artifacts("b") != nullptr);
  BOOST_TEST(jobs.artifacts("c") == nullptr);
  BOOST_TEST(jobs.artifacts("d") != nullptr);

  // Bodies rebuilt from the store come back as the most recently used.
  BOOST_TEST(!jobs.restore("a", bodies("a")));  // the same ETags: nothing changed
  BOOST_TEST(jobs.artifacts("a")->bytes == "Aa");
  BOOST_TEST(jobs.artifacts("b") == nullptr);
  BOOST_TEST(jobs.restore("a", bodies("a2")));  // the store was ahead of the last publish
  BOOST_TEST(jobs.find("a")->artifacts_etag == bodies("a2").artifacts->etag);
  BOOST_TEST(!jobs.restore("unknown", bodies("x")));
  BOOST_TEST(jobs.find("unknown") == nullptr);
  BOOST_TEST(jobs.held_bytes() == 2 * one);

  BOOST_TEST(jobs.erase("a"));
  BOOST_TEST(jobs.held_bytes() == one);
  BOOST_TEST(jobs.erase("c"));  // evicted bodies: nothing more to give back
  BOOST_TEST(jobs.held_bytes() == one);

  jobs.set_budget(1);  // smaller than any job: nothing is kept
  BOOST_TEST(jobs.held_bytes() == 0u);
  BOOST_TEST(jobs.artifacts("d") == nullptr);
  jobs.set_budget(0);  // no budget: every body is kept
  for (const char* uuid : {"b", "d", "e", "f", "g"}) put(jobs, uuid);
  BOOST_TEST(jobs.held_bytes() == 5 * one);
}

BOOST_AUTO_TEST_CASE(router_answers_evicted_jobs_from_their_etags) {
  api::catalog full;
  api::catalog tiny(1);
  const api::cached_job published = api::make_cached_job("big", many_checkpoints(20), {});
  full.put("big", published.artifacts, published.status);
  tiny.put("big", published.artifacts, published.status);
  BOOST_REQUIRE(tiny.artifacts("big") == nullptr);
  BOOST_TEST(tiny.held_bytes() == 0u);

  for (const char* target : {"/v1/post-training/job/artifacts?job_uuid=big",
                             "/v1/post-training/job/status?job_uuid=big"}) {
    const auto want = get(full, target);
    BOOST_REQUIRE(want.status == 200u);
    auto needs = get(tiny, target);
    BOOST_TEST(needs.load_job == "big", target);
    // The kept ETag answers 304s, gzip's included, and flags long-polls.
    api::request req{"GET", target, want.etag};
    auto not_modified = call(tiny, req);
    BOOST_TEST(not_modified.status == 304u, target);
    BOOST_TEST(not_modified.load_job.empty());
    BOOST_TEST(not_modified.etag == want.etag);
    req.accept_encoding = "gzip";
    const std::string gzip_etag = call(full, req).etag;
    req.if_none_match = gzip_etag;
    BOOST_TEST(gzip_etag == api::gzip_etag(want.etag));
    BOOST_TEST(call(tiny, req).status == 304u);
    req.prefer = "wait=5";
    BOOST_TEST(!call(tiny, req).wait_key.empty());
    BOOST_TEST(call(tiny, req).wait.count() == 5);

    // With the job read back, the same answer a catalog holding it gives.
    api::loaded_job loaded{"big", api::loaded_job::outcome::found,
                           api::make_cached_job("big", many_checkpoints(20), {})};
    const auto answered = api::handle({"GET", target}, tiny, true, api::default_options(), &loaded);
    BOOST_TEST(answered.status == 200u);
    BOOST_TEST(answered.load_job.empty());
    BOOST_TEST(answered.etag == want.etag);
    BOOST_TEST(*answered.body + std::string(answered.body_tail) ==
               *want.body + std::string(want.body_tail));
    api::request gz{"GET", target};
    gz.accept_encoding = "gzip";
    const auto zipped = api::handle(gz, tiny, true, api::default_options(), &loaded);
    BOOST_TEST(zipped.content_encoding == "gzip");
    BOOST_TEST(gunzip(*zipped.body) == *want.body + std::string(want.body_tail));
    // Bodies of another job do not stand in.
    loaded.job_uuid = "other";
    BOOST_TEST(api::handle({"GET", target}, tiny, true, api::default_options(), &loaded).load_job ==
               "big");
    loaded.job_uuid = "big";
    loaded.result = api::loaded_job::outcome::gone;
    check_error_body_of(api::handle({"GET", target}, tiny, true, api::default_options(), &loaded),
                        404);
    loaded.result = api::loaded_job::outcome::failed;
    const auto failed = api::handle({"GET", target}, tiny, true, api::default_options(), &loaded);
    check_error_body_of(failed, 500);
    BOOST_TEST(*failed.body == *api::internal_error_response().body);
  }
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

// ---- JSON numbers and the status body -------------------------------------

BOOST_AUTO_TEST_CASE(numbers_are_shortest_round_trip) {
  auto text = [](double v) {
    std::string out;
    ckptd::json_text::append_number(out, v);
    return out;
  };
  BOOST_TEST(text(2.59133) == "2.59133");
  BOOST_TEST(text(1e-05) == "1e-05");
  BOOST_TEST(text(3) == "3.0");
  BOOST_TEST(text(-0.0) == "-0.0");
  BOOST_TEST(text(0.1) == "0.1");
  BOOST_TEST(text(1e21) == "1e+21");
  BOOST_TEST(text(std::nan("")) == "null");
  std::mt19937_64 random(42);
  std::uniform_real_distribution<double> mantissa(-1, 1);
  std::uniform_int_distribution<int> exponent(-300, 300);
  for (int i = 0; i < 10000; ++i) {
    const double v = std::ldexp(mantissa(random), exponent(random));
    const std::string printed = text(v);
    // Boost.JSON 1.81 does not always round its parse correctly, so strtod
    // checks the exact value; Boost.JSON checks the syntax.
    BOOST_TEST_REQUIRE(json::parse(printed).is_double(), printed);
    BOOST_TEST_REQUIRE(std::strtod(printed.c_str(), nullptr) == v, printed);
  }
}

BOOST_AUTO_TEST_CASE(checkpoint_json_is_the_artifacts_item) {
  auto c = make_checkpoint("/runs/job-1/checkpoint-10", 1, 10, 1795946918123456789);
  c.metrics = store::training_metrics{1, 2.59133, 2.7, 14.9};
  const std::string alone = ckptd::json_text::checkpoint(c, "job-1");
  BOOST_TEST(alone ==
             R"({"identifier":"checkpoint-10","created_at":"2026-11-29T10:08:38.123456Z",)"
             R"("epoch":1,"post_training_job_id":"job-1","path":"/runs/job-1/checkpoint-10",)"
             R"("training_metrics":{"epoch":1,"train_loss":2.59133,"validation_loss":2.7,)"
             R"("perplexity":14.9}})");
  BOOST_TEST(api::artifacts_json("job-1", {c}) ==
             R"({"job_uuid":"job-1","checkpoints":[)" + alone + "]}");
  check_spec_schema("Checkpoint", alone);
}

BOOST_AUTO_TEST_CASE(status_body_shape) {
  auto a = make_checkpoint("/r/j/checkpoint-20", 2, 20, 2);
  a.metrics = store::training_metrics{2, 0.5, 0.75, 2.117};
  const auto b = make_checkpoint("/r/j/checkpoint-10", 1, 10, 1);
  api::job_status status;
  status.status = "completed";
  status.started_at_ns = 1795946918000000000;
  status.completed_at_ns = 1795946918123456789;
  const auto bodies = api::job_json("j", {a, b}, status);
  BOOST_TEST(bodies.status ==
             R"({"job_uuid":"j","status":"completed","started_at":"2026-11-29T10:08:38.000000Z",)"
             R"("completed_at":"2026-11-29T10:08:38.123456Z","checkpoints":[)" +
                 ckptd::json_text::checkpoint(b, "j") + "," + ckptd::json_text::checkpoint(a, "j") +
                 "]}");
  check_spec_schema("PostTrainingJobStatusResponse", bodies.status);
  check_spec_schema("PostTrainingJobArtifactsResponse", bodies.artifacts);

  // Unknown times are left out, not invented; an unknown status word is
  // reported as "scheduled" so the body stays within the schema's enum.
  const auto plain = api::job_json("j", {}, {});
  BOOST_TEST(plain.status == R"({"job_uuid":"j","status":"scheduled","checkpoints":[]})");
  api::job_status odd;
  odd.status = "exploded";
  const auto odd_body = api::job_json("j", {}, odd).status;
  BOOST_TEST(json::parse(odd_body).at("status").as_string() == "scheduled");
  check_spec_schema("PostTrainingJobStatusResponse", odd_body);
  for (const char* word : {"scheduled", "in_progress", "completed", "failed", "cancelled"}) {
    api::job_status st;
    st.status = word;
    check_spec_schema("PostTrainingJobStatusResponse", api::job_json("j", {a}, st).status);
  }
  check_spec_schema("ListPostTrainingJobsResponse", api::jobs_json({"a", "b"}));
}

// ---- header parsing -------------------------------------------------------

BOOST_AUTO_TEST_CASE(accept_encoding_and_prefer_parsing) {
  BOOST_TEST(api::accepts_gzip("gzip"));
  BOOST_TEST(api::accepts_gzip("deflate, gzip;q=0.5, br"));
  BOOST_TEST(api::accepts_gzip("GZIP"));
  BOOST_TEST(api::accepts_gzip("x-gzip"));
  BOOST_TEST(api::accepts_gzip("*"));
  BOOST_TEST(!api::accepts_gzip(""));
  BOOST_TEST(!api::accepts_gzip("identity"));
  BOOST_TEST(!api::accepts_gzip("gzip;q=0"));
  BOOST_TEST(!api::accepts_gzip("gzip; q=0.0, deflate"));
  BOOST_TEST(!api::accepts_gzip("*, gzip;q=0"));
  BOOST_TEST(!api::accepts_gzip("*;q=0"));
  BOOST_TEST(!api::accepts_gzip("gzipx"));

  BOOST_TEST(api::preferred_wait("wait=10").value_or(0) == 10u);
  BOOST_TEST(api::preferred_wait("respond-async, WAIT = 5").value_or(0) == 5u);
  BOOST_TEST(api::preferred_wait("wait=\"7\"").value_or(0) == 7u);
  BOOST_TEST(!api::preferred_wait("").has_value());
  BOOST_TEST(!api::preferred_wait("wait=").has_value());
  BOOST_TEST(!api::preferred_wait("wait=-1").has_value());
  BOOST_TEST(!api::preferred_wait("wait=1.5").has_value());
  BOOST_TEST(!api::preferred_wait("waiting=3").has_value());
}

BOOST_AUTO_TEST_CASE(bearer_tokens_and_origins) {
  const std::vector<std::string> tokens = {"s3cret", "other-token"};
  BOOST_TEST(api::bearer_token_valid("Bearer s3cret", tokens));
  BOOST_TEST(api::bearer_token_valid("bearer   other-token ", tokens));
  BOOST_TEST(!api::bearer_token_valid("Bearer s3cre", tokens));
  BOOST_TEST(!api::bearer_token_valid("Bearer s3cretx", tokens));
  BOOST_TEST(!api::bearer_token_valid("Bearer ", tokens));
  BOOST_TEST(!api::bearer_token_valid("Basic czNjcmV0", tokens));
  BOOST_TEST(!api::bearer_token_valid("Bearers3cret", tokens));
  BOOST_TEST(!api::bearer_token_valid("s3cret", tokens));
  BOOST_TEST(!api::bearer_token_valid("Bearer s3cret", {}));
  BOOST_TEST(!api::bearer_token_valid("Bearer x", {""}));

  BOOST_TEST(api::origin_allowed("https://dash.example", {"https://dash.example"}));
  BOOST_TEST(!api::origin_allowed("https://evil.example", {"https://dash.example"}));
  BOOST_TEST(api::origin_allowed("https://any.example", {"*"}));
  BOOST_TEST(!api::origin_allowed("", {"*"}));
}

// ---- routing of the newer routes ------------------------------------------

BOOST_AUTO_TEST_CASE(router_status_route) {
  api::catalog jobs;
  api::job_status st;
  st.status = "in_progress";
  st.started_at_ns = 1;
  auto bodies = api::job_json("job-1", {make_checkpoint("/r/a", 0, -1, 0)}, st);
  jobs.put("job-1", api::make_cached_body(bodies.artifacts), api::make_cached_body(bodies.status));

  auto ok = get(jobs, "/v1/post-training/job/status?job_uuid=job-1");
  BOOST_TEST(ok.status == 200u);
  BOOST_TEST(*ok.body == bodies.status);
  BOOST_TEST(ok.cache_control == "no-cache");
  BOOST_TEST((ok.route == api::route_id::status));
  check_spec_schema("PostTrainingJobStatusResponse", *ok.body);
  BOOST_TEST(get(jobs, "/v1/post-training/job/status?job_uuid=job-1", true, ok.etag).status ==
             304u);
  BOOST_TEST(ok.etag != get(jobs, "/v1/post-training/job/artifacts?job_uuid=job-1").etag);
  check_error_body_of(get(jobs, "/v1/post-training/job/status?job_uuid=nope"), 404);
  check_error_body_of(get(jobs, "/v1/post-training/job/status"), 400);
  auto head = get(jobs, "/v1/post-training/job/status?job_uuid=job-1", true, {}, "HEAD");
  BOOST_TEST(head.status == 200u);
  BOOST_TEST(!head.send_body);
}

BOOST_AUTO_TEST_CASE(router_not_running_routes) {
  api::catalog jobs;
  for (const char* path : {"/v1/post-training/job/cancel", "/v1/post-training/supervised-fine-tune",
                           "/v1/post-training/preference-optimize"}) {
    api::request req{"POST", path};
    req.body = R"({"job_uuid":"x"})";
    auto res = call(jobs, req);
    BOOST_TEST(res.status == 501u, path);
    BOOST_TEST(body_json(res).at("title").as_string() == "Not Implemented");
    check_spec_schema("Error", *res.body);

    req.body = R"({"job_uuid":)";
    res = call(jobs, req);
    BOOST_TEST(res.status == 400u);
    BOOST_TEST(body_json(res).at("detail").as_string().find("not valid JSON") !=
               json::string::npos);
    req.body = "[1,2]";
    res = call(jobs, req);
    BOOST_TEST(res.status == 400u);
    BOOST_TEST(body_json(res).at("detail").as_string().find("JSON object") != json::string::npos);
    req.body = "";
    BOOST_TEST(call(jobs, req).status == 400u);

    auto wrong = get(jobs, path);
    BOOST_TEST(wrong.status == 405u);
    BOOST_TEST(wrong.allow == "POST");
    BOOST_TEST(get(jobs, path, true, {}, "HEAD").status == 405u);
  }
  auto post_on_get = call(jobs, {"POST", "/v1/post-training/jobs"});
  BOOST_TEST(post_on_get.status == 405u);
  BOOST_TEST(post_on_get.allow == "GET, HEAD");
}

BOOST_AUTO_TEST_CASE(router_gzip_and_etags_per_encoding) {
  api::catalog jobs;
  auto bodies = api::job_json("big", many_checkpoints(20), {});
  BOOST_REQUIRE(bodies.artifacts.size() >= api::gzip_min_bytes);
  jobs.put("big", api::make_cached_body(bodies.artifacts), api::make_cached_body(bodies.status));
  api::request req{"GET", "/v1/post-training/job/artifacts?job_uuid=big"};
  const auto plain = call(jobs, req);
  BOOST_TEST(plain.content_encoding.empty());
  BOOST_TEST(plain.vary == "Accept-Encoding");
  req.accept_encoding = "gzip, deflate";
  const auto zipped = call(jobs, req);
  BOOST_TEST(zipped.content_encoding == "gzip");
  BOOST_TEST(zipped.vary == "Accept-Encoding");
  BOOST_TEST(zipped.body->size() < plain.body->size());
  BOOST_TEST(gunzip(*zipped.body) == *plain.body);
  BOOST_TEST(zipped.etag != plain.etag);
  BOOST_TEST(zipped.etag.substr(zipped.etag.size() - 4) == "-gz\"");
  // Each representation's ETag validates only itself.
  req.if_none_match = zipped.etag;
  BOOST_TEST(call(jobs, req).status == 304u);
  req.accept_encoding = {};
  BOOST_TEST(call(jobs, req).status == 200u);
  // Small bodies are never compressed.
  BOOST_TEST(get(jobs, "/v1/post-training/jobs").content_encoding.empty());
  req = {"GET", "/v1/post-training/jobs"};
  req.accept_encoding = "gzip";
  BOOST_TEST(call(jobs, req).content_encoding.empty());
}

// The status body the server publishes shares the artifacts body's
// checkpoints array: it must read exactly as the whole status body, with an
// ETag of its own, and its gzip encoding (made on first use) must be of the
// whole.
BOOST_AUTO_TEST_CASE(status_body_shares_the_checkpoints_of_the_artifacts_body) {
  api::job_status st;
  st.status = "in_progress";
  st.started_at_ns = 1795946918123456789;
  const auto full = api::job_json("big", many_checkpoints(20), st);
  const auto shared = api::shared_job_json("big", many_checkpoints(20), st);
  BOOST_TEST(shared.artifacts == full.artifacts);
  const auto artifacts = api::make_cached_body(shared.artifacts);
  const auto status = api::make_status_body(shared.status_head, artifacts, shared.checkpoints_at);
  BOOST_TEST(status->text() == full.status);
  BOOST_TEST(status->size() == full.status.size());
  BOOST_TEST(status->etag != artifacts->etag);
  BOOST_TEST(gunzip(status->gzip_bytes()) == full.status);

  api::catalog jobs;
  jobs.put("big", artifacts, status);
  api::request req{"GET", "/v1/post-training/job/status?job_uuid=big"};
  const auto plain = call(jobs, req);
  BOOST_TEST(*plain.body + std::string(plain.body_tail) == full.status);
  req.accept_encoding = "gzip";
  const auto zipped = call(jobs, req);
  BOOST_TEST(zipped.content_encoding == "gzip");
  BOOST_TEST(zipped.body_tail.empty());
  BOOST_TEST(gunzip(*zipped.body) == full.status);

  // Another status over the same checkpoints is another version.
  st.status = "completed";
  const auto done = api::shared_job_json("big", many_checkpoints(20), st);
  BOOST_TEST(api::make_status_body(done.status_head, artifacts, done.checkpoints_at)->etag !=
             status->etag);
}

BOOST_AUTO_TEST_CASE(router_long_poll_flags) {
  api::catalog jobs;
  jobs.put("j", api::make_cached_body("A"), api::make_cached_body("S"));
  api::options opts;
  opts.max_wait = 300s;
  api::request req{"GET", "/v1/post-training/job/artifacts?job_uuid=j"};
  const auto first = call(jobs, req, opts);
  req.if_none_match = first.etag;
  req.prefer = "wait=1000";
  auto held = call(jobs, req, opts);
  BOOST_TEST(held.status == 304u);
  BOOST_TEST(held.wait.count() == 300);  // capped
  BOOST_TEST(held.wait_key == "a/j");
  req.prefer = "wait=0";
  BOOST_TEST(call(jobs, req, opts).wait.count() == 0);
  req.prefer = "wait=5";
  req.if_none_match = "\"stale\"";
  BOOST_TEST(call(jobs, req, opts).status == 200u);  // changed already: no wait
  BOOST_TEST(call(jobs, req, opts).wait.count() == 0);
  req = {"GET", "/v1/post-training/jobs"};
  const std::string list_etag = call(jobs, req).etag;
  req.if_none_match = list_etag;
  req.prefer = "wait=5";
  BOOST_TEST(call(jobs, req, opts).wait_key == "j");
  req = {"GET", "/v1/post-training/job/status?job_uuid=j"};
  const std::string status_etag = call(jobs, req).etag;
  req.if_none_match = status_etag;
  req.prefer = "wait=5";
  BOOST_TEST(call(jobs, req, opts).wait_key == "s/j");
}

BOOST_AUTO_TEST_CASE(router_auth_and_cors) {
  api::catalog jobs;
  api::options opts;
  opts.auth_tokens = {"s3cret"};
  opts.cors_origins = {"https://dash.example"};

  api::request req{"GET", "/v1/post-training/jobs"};
  auto missing = call(jobs, req, opts);
  BOOST_TEST(missing.status == 401u);
  BOOST_TEST(missing.www_authenticate == R"(Bearer realm="ckptd")");
  check_spec_schema("Error", *missing.body);
  req.authorization = "Bearer wrong";
  auto wrong = call(jobs, req, opts);
  BOOST_TEST(wrong.status == 401u);
  BOOST_TEST(std::string(wrong.www_authenticate).find("invalid_token") != std::string::npos);
  req.authorization = "Bearer s3cret";
  BOOST_TEST(call(jobs, req, opts).status == 200u);
  for (const char* probe : {"/healthz", "/readyz"}) {
    BOOST_TEST(call(jobs, {"GET", probe}, opts).status == 200u);
  }
  BOOST_TEST(call(jobs, {"GET", "/metrics"}, opts).status == 401u);

  // Preflight: no credentials needed; full answer for an allowed origin only.
  api::request pre{"OPTIONS", "/v1/post-training/job/artifacts?job_uuid=x"};
  pre.origin = "https://dash.example";
  pre.access_control_request_method = "GET";
  auto ok = call(jobs, pre, opts);
  api::add_cors(ok, pre.origin, opts);
  BOOST_TEST(ok.status == 204u);
  BOOST_TEST(!ok.send_body);
  BOOST_TEST(header_of(ok, "Access-Control-Allow-Origin") == "https://dash.example");
  BOOST_TEST(header_of(ok, "Access-Control-Allow-Methods").find("GET") != std::string::npos);
  const std::string allowed_headers = header_of(ok, "Access-Control-Allow-Headers");
  for (const char* h : {"Authorization", "If-None-Match", "Prefer", "Last-Event-ID"}) {
    BOOST_TEST(allowed_headers.find(h) != std::string::npos, h);
  }
  BOOST_TEST(header_of(ok, "Access-Control-Max-Age") != "<absent>");
  BOOST_TEST(ok.vary.find("Origin") != std::string::npos);

  pre.origin = "https://evil.example";
  auto refused = call(jobs, pre, opts);
  api::add_cors(refused, pre.origin, opts);
  BOOST_TEST(refused.cors.empty());
  BOOST_TEST(call(jobs, {"OPTIONS", "/nowhere"}, opts).status == 404u);

  // Simple requests: echo plus exposed headers, errors included.
  auto answered = call(jobs, req, opts);
  api::add_cors(answered, "https://dash.example", opts);
  BOOST_TEST(header_of(answered, "Access-Control-Allow-Origin") == "https://dash.example");
  const std::string exposed = header_of(answered, "Access-Control-Expose-Headers");
  for (const char* h : {"ETag", "Retry-After", "retry-after-ms", "Preference-Applied"}) {
    BOOST_TEST(exposed.find(h) != std::string::npos, h);
  }
  auto limited = api::rate_limited_response(1s);
  api::add_cors(limited, "https://dash.example", opts);
  BOOST_TEST(header_of(limited, "Access-Control-Allow-Origin") == "https://dash.example");
  // No CORS configured: no CORS headers, no Vary: Origin.
  auto none = call(jobs, {"GET", "/healthz"});
  api::add_cors(none, "https://dash.example", api::default_options());
  BOOST_TEST(none.cors.empty());
  BOOST_TEST(none.vary.empty());
}

BOOST_AUTO_TEST_CASE(router_events_and_misc_routes) {
  api::catalog jobs;
  auto ev = call(jobs, {"GET", "/v1/ckptd/events?job_uuid=j&last_event_id=42"});
  BOOST_TEST(ev.events);
  BOOST_TEST(ev.events_job == "j");
  BOOST_TEST(ev.last_event_id.value_or(0) == 42u);
  api::request with_header{"GET", "/v1/ckptd/events?last_event_id=1"};
  with_header.last_event_id = "7";
  BOOST_TEST(call(jobs, with_header).last_event_id.value_or(0) == 7u);
  BOOST_TEST(!call(jobs, {"GET", "/v1/ckptd/events"}).last_event_id.has_value());
  BOOST_TEST(call(jobs, {"GET", "/v1/ckptd/events?last_event_id=x"}).status == 400u);
  BOOST_TEST(call(jobs, {"GET", "/v1/ckptd/events?job_uuid="}).status == 400u);
  BOOST_TEST(call(jobs, {"HEAD", "/v1/ckptd/events"}).status == 405u);

  auto metrics = call(jobs, {"GET", "/metrics"});
  BOOST_TEST(metrics.metrics);
  BOOST_TEST(metrics.content_type == "text/plain; version=0.0.4; charset=utf-8");

  auto doc = call(jobs, {"GET", "/openapi.json"});
  BOOST_TEST(doc.status == 200u);
  const json::value parsed = json::parse(*doc.body);
  BOOST_TEST(parsed.at("openapi").as_string().starts_with("3."));
  for (const char* path :
       {"/v1/post-training/job/artifacts", "/v1/post-training/job/status", "/v1/post-training/jobs",
        "/v1/post-training/job/cancel", "/v1/post-training/supervised-fine-tune",
        "/v1/post-training/preference-optimize", "/v1/ckptd/events", "/healthz", "/readyz",
        "/metrics", "/openapi.json"}) {
    BOOST_TEST(parsed.at("paths").as_object().contains(path), path);
  }
  // The llama-stack schemas are served exactly as the spec has them.
  for (const char* name :
       {"Checkpoint", "PostTrainingMetric", "PostTrainingJobStatusResponse",
        "PostTrainingJobArtifactsResponse", "ListPostTrainingJobsResponse", "Error"}) {
    BOOST_TEST(parsed.at("components").at("schemas").at(name) == spec_schema(name), name);
  }
  BOOST_TEST((api::route_of("/metrics?x") == api::route_id::metrics));
  BOOST_TEST(api::route_label(api::route_of("/nowhere")) == "other");
}

BOOST_AUTO_TEST_CASE(event_frames_and_ring) {
  std::string out;
  auto e = make_event(5, "j", "checkpoint.created");
  e.data = "line one\nline two\r\nthree";
  api::append_sse_event(out, e);
  BOOST_TEST(out ==
             "id: 5\nevent: checkpoint.created\ndata: line one\ndata: line two\ndata: three\n\n");
  out.clear();
  api::append_sse_reset(out, 9, 3, "gone");
  BOOST_TEST(out == "id: 9\nevent: reset\ndata: {\"reason\":\"gone\",\"last_event_id\":3}\n\n");

  api::event_ring ring(3);
  BOOST_TEST(!ring.covers(0));
  for (std::uint64_t seq = 1; seq <= 5; ++seq) ring.push(make_event(seq, "j"));
  BOOST_TEST(ring.size() == 3u);
  BOOST_TEST(ring.first_seq() == 3u);
  BOOST_TEST(ring.last_seq() == 5u);
  BOOST_TEST(!ring.covers(1));
  BOOST_TEST(ring.covers(2));
  BOOST_TEST(ring.covers(5));
  BOOST_TEST(!ring.covers(6));  // from another incarnation of the log
  std::vector<std::uint64_t> after3;
  ring.for_each_after(3, [&](const store::event& ev) { after3.push_back(ev.seq); });
  BOOST_TEST(after3 == (std::vector<std::uint64_t>{4, 5}), boost::test_tools::per_element());
  ring.set_capacity(1);
  BOOST_TEST(ring.first_seq() == 5u);
}

BOOST_AUTO_TEST_CASE(exposition_checker_catches_mistakes) {
  BOOST_TEST(exposition_problem("# TYPE a counter\na 1\n").empty());
  BOOST_TEST(!exposition_problem("a 1\n").empty());
  BOOST_TEST(!exposition_problem("# TYPE a counter\na one\n").empty());
  BOOST_TEST(!exposition_problem("# TYPE a counter\na{x=\"1} 1\n").empty());
  BOOST_TEST(!exposition_problem("# TYPE a counter\na 1").empty());
  BOOST_TEST(
      !exposition_problem("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                          "h_sum 1\nh_count 1\n")
           .empty());
  BOOST_TEST(
      exposition_problem("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                         "h_sum 1\nh_count 2\n")
          .empty());
}

BOOST_AUTO_TEST_CASE(metrics_registry_renders_valid_text) {
  ckptd::metrics::ingest_latency.observe(0.003);
  ckptd::metrics::ingest_latency.observe(100);
  ckptd::metrics::watches.set(12);
  ckptd::metrics::rescans.inc();
  std::string text;
  ckptd::metrics::render(text);
  BOOST_TEST(exposition_problem(text) == "");
  for (const char* name :
       {"ckptd_ingest_latency_seconds_bucket", "ckptd_inotify_watches 12", "ckptd_rescans_total",
        "ckptd_index_write_failures_total", "ckptd_index_healthy", "ckptd_checkpoints_indexed",
        "ckptd_jobs_indexed", "ckptd_http_request_duration_seconds_count",
        "ckptd_http_rate_limited_total", "ckptd_http_open_connections",
        "ckptd_build_info{version=\""}) {
    BOOST_TEST(text.find(name) != std::string::npos, name);
  }
  std::string labels;
  ckptd::metrics::append_label(labels, "route", "a\"b\\c\nd");
  BOOST_TEST(labels == R"(route="a\"b\\c\nd")");
}

// ---- the newer behaviours over loopback -----------------------------------

BOOST_AUTO_TEST_CASE(server_serves_status_and_etags, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  client c(s.srv.port());
  api::job_status st;
  st.status = "in_progress";
  st.started_at_ns = 1795946918000000000;
  s.srv.publish("job-1", {make_checkpoint("/runs/job-1/checkpoint-1", 0, 1, 5)}, st);
  http::response<http::string_body> res;
  poll_until([&] {
    res = c.get("/v1/post-training/job/status?job_uuid=job-1");
    return res.result_int() != 404;
  });
  BOOST_TEST(res.result_int() == 200);
  check_spec_schema("PostTrainingJobStatusResponse", res.body());
  BOOST_TEST(json::parse(res.body()).at("status").as_string() == "in_progress");
  BOOST_TEST(header(res, "Cache-Control") == "no-cache");
  for (const char* target :
       {"/v1/post-training/job/status?job_uuid=job-1",
        "/v1/post-training/job/artifacts?job_uuid=job-1", "/v1/post-training/jobs"}) {
    auto first = c.get(target);
    const std::string etag = header(first, "ETag");
    BOOST_TEST(etag != "<absent>", target);
    auto again = c.get(target, "If-None-Match: " + etag + "\r\n");
    BOOST_TEST(again.result_int() == 304, target);
    BOOST_TEST(again.body().empty());
  }
}

BOOST_AUTO_TEST_CASE(server_not_running_routes_read_the_body, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_body_bytes = 64;
  running_server s(opts);
  client c(s.srv.port());
  auto post = [&](const std::string& path, const std::string& body) {
    c.send("POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    return c.read();
  };
  check_error_body(post("/v1/post-training/job/cancel", R"({"job_uuid":"j"})"), 501);
  check_error_body(post("/v1/post-training/supervised-fine-tune", "{not json"), 400);
  check_error_body(post("/v1/post-training/preference-optimize", "42"), 400);
  auto wrong = c.get("/v1/post-training/job/cancel");
  check_error_body(wrong, 405);
  BOOST_TEST(header(wrong, "Allow") == "POST");
  // The connection is still in step: bodies were read whole.
  BOOST_TEST(c.get("/healthz").result_int() == 200);
  auto big =
      post("/v1/post-training/job/cancel", "{\"job_uuid\":\"" + std::string(100, 'x') + "\"}");
  check_error_body(big, 413);
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_CASE(server_gzip_round_trip, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  client c(s.srv.port());
  s.srv.publish("big", many_checkpoints(30));
  http::response<http::string_body> plain;
  poll_until([&] {
    plain = c.get("/v1/post-training/job/artifacts?job_uuid=big");
    return plain.result_int() == 200;
  });
  BOOST_TEST(header(plain, "Content-Encoding") == "<absent>");
  BOOST_TEST(header(plain, "Vary") == "Accept-Encoding");
  auto zipped = c.get("/v1/post-training/job/artifacts?job_uuid=big", "Accept-Encoding: gzip\r\n");
  BOOST_TEST(zipped.result_int() == 200);
  BOOST_TEST(header(zipped, "Content-Encoding") == "gzip");
  BOOST_TEST(header(zipped, "Vary") == "Accept-Encoding");
  BOOST_TEST(zipped.body().size() < plain.body().size());
  BOOST_TEST(gunzip(zipped.body()) == plain.body());
  check_schema("200", gunzip(zipped.body()));
  BOOST_TEST(header(zipped, "ETag") != header(plain, "ETag"));
  auto cached = c.get("/v1/post-training/job/artifacts?job_uuid=big",
                      "Accept-Encoding: gzip\r\nIf-None-Match: " + header(zipped, "ETag") + "\r\n");
  BOOST_TEST(cached.result_int() == 304);
  auto status = c.get("/v1/post-training/job/status?job_uuid=big", "Accept-Encoding: gzip\r\n");
  BOOST_TEST(header(status, "Content-Encoding") == "gzip");
  check_spec_schema("PostTrainingJobStatusResponse", gunzip(status.body()));
}

BOOST_AUTO_TEST_CASE(server_long_poll_wakes_on_publish, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  s.srv.publish("job-1", {make_checkpoint("/r/job-1/checkpoint-1", 0, 1, 1)});
  client c(s.srv.port());
  for (const char* target : {"/v1/post-training/job/artifacts?job_uuid=job-1",
                             "/v1/post-training/job/status?job_uuid=job-1"}) {
    http::response<http::string_body> first;
    poll_until([&] {
      first = c.get(target);
      return first.result_int() == 200;
    });
    const std::string etag = header(first, "ETag");
    const double held_before = ckptd::metrics::long_poll_waiters.value();
    // The wait is long: only a wake-up can answer 200 before the test's timeout.
    c.send(std::string("GET ") + target + " HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag +
           "\r\nPrefer: wait=50\r\n\r\n");
    BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > held_before; }));
    static int step = 2;
    s.srv.publish("job-1",
                  {make_checkpoint("/r/job-1/checkpoint-1", 0, 1, 1),
                   make_checkpoint("/r/job-1/checkpoint-" + std::to_string(step), 0, step, step)});
    ++step;
    auto woken = c.read();
    BOOST_TEST(woken.result_int() == 200, target);
    BOOST_TEST(header(woken, "Preference-Applied") == "wait=50");
    BOOST_TEST(header(woken, "ETag") != etag);
    BOOST_TEST(json::parse(woken.body()).at("checkpoints").as_array().size() == 2u);
  }
  // The job list wakes when a job appears.
  auto list = c.get("/v1/post-training/jobs");
  c.send("GET /v1/post-training/jobs HTTP/1.1\r\nHost: x\r\nIf-None-Match: " +
         header(list, "ETag") + "\r\nPrefer: wait=50\r\n\r\n");
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > 0; }));
  s.srv.publish("job-2", {});
  auto grown = c.read();
  BOOST_TEST(grown.result_int() == 200);
  BOOST_TEST(grown.body() == R"({"data":[{"job_uuid":"job-1"},{"job_uuid":"job-2"}]})");
}

BOOST_AUTO_TEST_CASE(server_long_poll_times_out_with_304, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  s.srv.publish("job-1", {});
  client c(s.srv.port());
  http::response<http::string_body> first;
  poll_until([&] {
    first = c.get("/v1/post-training/job/artifacts?job_uuid=job-1");
    return first.result_int() == 200;
  });
  // Another job changing does not end this wait; a same-body republish does not either.
  s.srv.publish("job-9", {});
  s.srv.publish("job-1", {});
  auto held = c.get("/v1/post-training/job/artifacts?job_uuid=job-1",
                    "If-None-Match: " + header(first, "ETag") + "\r\nPrefer: wait=1\r\n");
  BOOST_TEST(held.result_int() == 304);
  BOOST_TEST(header(held, "Preference-Applied") == "wait=1");
  BOOST_TEST(header(held, "ETag") == header(first, "ETag"));
  BOOST_TEST(held.keep_alive());
  BOOST_TEST(c.get("/healthz").result_int() == 200);
}

BOOST_AUTO_TEST_CASE(server_bounds_long_poll_waiters, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_waiters = 1;
  running_server s(opts);
  s.srv.publish("job-1", {});
  client first(s.srv.port());
  http::response<http::string_body> plain;
  poll_until([&] {
    plain = first.get("/v1/post-training/jobs");
    return plain.body() != R"({"data":[]})";
  });
  const std::string wait_headers =
      "If-None-Match: " + header(plain, "ETag") + "\r\nPrefer: wait=30\r\n";
  const double before = ckptd::metrics::long_poll_waiters.value();
  first.send("GET /v1/post-training/jobs HTTP/1.1\r\nHost: x\r\n" + wait_headers + "\r\n");
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > before; }));
  client second(s.srv.port());
  auto busy = second.get("/v1/post-training/jobs", wait_headers);
  check_error_body(busy, 503);
  BOOST_TEST(header(busy, "Retry-After") == "1");
  // Without Prefer the same request is answered at once.
  BOOST_TEST(
      second.get("/v1/post-training/jobs", "If-None-Match: " + header(plain, "ETag") + "\r\n")
          .result_int() == 304);
  s.srv.publish("job-2", {});
  BOOST_TEST(first.read().result_int() == 200);
}

// A held long-poll whose client closes the connection gives its waiter slot
// back at once, not when its wait (50 s here) runs out; a client that
// pipelines a request behind its long-poll is still held, then answered.
BOOST_AUTO_TEST_CASE(server_releases_long_poll_slot_when_client_leaves,
                     *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_waiters = 1;
  running_server s(opts);
  s.srv.publish("job-1", {});
  const std::string target = "/v1/post-training/job/artifacts?job_uuid=job-1";
  client first(s.srv.port());
  http::response<http::string_body> plain;
  poll_until([&] {
    plain = first.get(target);
    return plain.result_int() == 200;
  });
  const std::string held_request =
      "GET " + target + " HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + header(plain, "ETag") +
      "\r\nPrefer: wait=";
  const double before = ckptd::metrics::long_poll_waiters.value();
  first.send(held_request + "50\r\n\r\n");
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > before; }));
  first.socket.close();
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() == before; }));

  // The one slot is free again: this wait is held (not 503), and the request
  // pipelined behind it is answered after it.
  client second(s.srv.port());
  second.send(held_request + "1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  auto held = second.read();
  BOOST_TEST(held.result_int() == 304);
  BOOST_TEST(header(held, "Preference-Applied") == "wait=1");
  BOOST_TEST(second.read().result_int() == 200);
}

BOOST_AUTO_TEST_CASE(server_streams_live_events, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.heartbeat_interval = 50ms;
  running_server s(opts);
  sse_client all(s.srv.port(), "/v1/ckptd/events");
  sse_client one(s.srv.port(), "/v1/ckptd/events?job_uuid=b");
  BOOST_TEST(all.head.result_int() == 200);
  BOOST_TEST(all.head[http::field::content_type] == "text/event-stream");
  BOOST_TEST(all.head[http::field::cache_control] == "no-cache");
  BOOST_TEST(all.head[http::field::transfer_encoding] == "chunked");
  // The first frame only sets the id to come back with.
  all.until([&] { return !all.frames().empty(); });
  one.until([&] { return !one.frames().empty(); });
  BOOST_REQUIRE(!all.frames().empty());
  BOOST_TEST(all.frames().front().id == "0");
  BOOST_TEST(all.frames().front().event.empty());

  s.srv.publish_events({make_event(1, "a", "checkpoint.created"), make_event(2, "b", "job.status"),
                        make_event(3, "a", "checkpoint.deleted")});
  all.until([&] { return all.events().size() >= 3; });
  one.until([&] { return one.events().size() >= 1; });
  const auto events = all.events();
  BOOST_REQUIRE(events.size() == 3u);
  BOOST_TEST(events[0].id == "1");
  BOOST_TEST(events[0].event == "checkpoint.created");
  BOOST_TEST(events[0].data == make_event(1, "a").data);
  BOOST_TEST(events[1].event == "job.status");
  BOOST_TEST(events[2].event == "checkpoint.deleted");
  BOOST_TEST(one.event_ids() == (std::vector<std::uint64_t>{2}), boost::test_tools::per_element());
  // Heartbeats while idle.
  all.until([&] {
    const auto f = all.frames();
    return std::any_of(f.begin(), f.end(), [](const sse_frame& x) { return x.comment; });
  });
  BOOST_TEST(all.text.find(": ping\n\n") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(server_replays_missed_events_from_the_ring, *boost::unit_test::timeout(60)) {
  running_server s(unlimited());
  for (std::uint64_t seq = 1; seq <= 10; ++seq) s.srv.publish_events({make_event(seq, "j")});
  sse_client c(s.srv.port(), "/v1/ckptd/events", "Last-Event-ID: 6\r\n");
  c.until([&] { return c.events().size() >= 4; });
  BOOST_TEST(c.event_ids() == seq_range(7, 10), boost::test_tools::per_element());
  s.srv.publish_events({make_event(11, "j")});
  c.until([&] { return c.events().size() >= 5; });
  BOOST_TEST(c.event_ids() == seq_range(7, 11), boost::test_tools::per_element());
  // ?last_event_id= works for clients that cannot set the header.
  sse_client q(s.srv.port(), "/v1/ckptd/events?last_event_id=9");
  q.until([&] { return q.events().size() >= 2; });
  BOOST_TEST(q.event_ids() == seq_range(10, 11), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(server_resets_when_history_is_gone, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.recent_events = 3;
  running_server s(opts);
  for (std::uint64_t seq = 1; seq <= 10; ++seq) s.srv.publish_events({make_event(seq, "j")});
  sse_client c(s.srv.port(), "/v1/ckptd/events", "Last-Event-ID: 2\r\n");
  c.until([&] { return !c.events().empty(); });
  const auto events = c.events();
  BOOST_REQUIRE(!events.empty());
  BOOST_TEST(events[0].event == "reset");
  BOOST_TEST(events[0].id == "10");
  BOOST_TEST(json::parse(events[0].data).at("last_event_id").as_int64() == 2);
  s.srv.publish_events({make_event(11, "j")});
  c.until([&] { return c.events().size() >= 2; });
  BOOST_TEST(c.events().back().id == "11");
}

BOOST_AUTO_TEST_CASE(server_replays_missed_events_from_the_store, *boost::unit_test::timeout(120)) {
  temp_dir dir;
  auto opened = store::index::open(dir.path / "index");
  BOOST_REQUIRE(opened.has_value());
  store::index& index = **opened;
  api::options opts = unlimited();
  opts.event_store = &index;
  opts.recent_events = 4;

  std::uint64_t seen = 0;
  {
    running_server s(opts);
    auto first = store_events(index, "job-1", 5);
    s.srv.publish_events(first);
    sse_client c(s.srv.port(), "/v1/ckptd/events", "Last-Event-ID: 0\r\n");
    c.until([&] { return c.events().size() >= 5; });
    BOOST_TEST(c.event_ids() == seq_range(1, 5), boost::test_tools::per_element());
    seen = c.event_ids().back();
    check_spec_schema("PostTrainingJob", R"({"job_uuid":"x"})");
  }
  // While the client was away: more events than the ring holds, and a restart.
  auto missed = store_events(index, "job-1", 1500);
  auto other = store_events(index, "job-2", 3);
  {
    running_server s(opts);
    // Only the newest reach the new server's ring; the rest must come from the store.
    s.srv.publish_events({other.back()});
    sse_client c(s.srv.port(), "/v1/ckptd/events",
                 "Last-Event-ID: " + std::to_string(seen) + "\r\n");
    c.until([&] { return c.events().size() >= 1503; });
    BOOST_TEST(c.event_ids() == seq_range(seen + 1, other.back().seq),
               boost::test_tools::per_element());
    BOOST_TEST(c.events().front().data == missed.front().data);
    // Live events continue after the replay, without gaps or repeats.
    auto live = store_events(index, "job-2", 2);
    s.srv.publish_events(live);
    c.until([&] { return c.events().size() >= 1505; });
    BOOST_TEST(c.event_ids() == seq_range(seen + 1, live.back().seq),
               boost::test_tools::per_element());

    // A filtered stream replays only its job's events.
    sse_client j2(s.srv.port(),
                  "/v1/ckptd/events?job_uuid=job-2&last_event_id=" + std::to_string(seen));
    j2.until([&] { return j2.events().size() >= 5; });
    for (const auto& f : j2.events()) BOOST_TEST(f.data.find("job-2") != std::string::npos);
    BOOST_TEST(j2.events().size() == 5u);

    // A fresh stream starts from the store's newest seq, even before any event.
    sse_client fresh(s.srv.port(), "/v1/ckptd/events");
    fresh.until([&] { return !fresh.frames().empty(); });
    BOOST_REQUIRE(!fresh.frames().empty());
    BOOST_TEST(fresh.frames().front().id == std::to_string(live.back().seq));

    // An id from a rebuilt index (beyond anything in the log) gets a reset.
    sse_client stale(s.srv.port(), "/v1/ckptd/events", "Last-Event-ID: 999999\r\n");
    stale.until([&] { return !stale.events().empty(); });
    BOOST_REQUIRE(!stale.events().empty());
    BOOST_TEST(stale.events().front().event == "reset");
    BOOST_TEST(stale.events().front().id == std::to_string(live.back().seq));
  }
}

// A rebuilt index's event log starts after the old one's seqs: a client that
// comes back with an id from before the rebuild is told to start over, both
// before the new log has an event and after, never resumed mid-way.
BOOST_AUTO_TEST_CASE(server_resets_a_client_from_before_a_rebuild, *boost::unit_test::timeout(60)) {
  temp_dir dir;
  auto opened = store::index::open(dir.path / "index");
  BOOST_REQUIRE(opened.has_value());
  store::index& index = **opened;
  constexpr std::uint64_t start = 1'000'000;
  BOOST_REQUIRE(index.start_events_after(start).has_value());
  api::options opts = unlimited();
  opts.event_store = &index;
  running_server s(opts);

  const auto first_event_for = [&](std::uint64_t last_seen) {
    sse_client c(s.srv.port(), "/v1/ckptd/events",
                 "Last-Event-ID: " + std::to_string(last_seen) + "\r\n");
    c.until([&] { return !c.events().empty(); });
    BOOST_REQUIRE(!c.events().empty());
    return c.events().front();
  };
  auto before = first_event_for(5);  // the log is still empty
  BOOST_TEST(before.event == "reset");
  BOOST_TEST(before.id == std::to_string(start));

  auto written = store_events(index, "job-1", 2);
  s.srv.publish_events(written);
  auto after = first_event_for(5);
  BOOST_TEST(after.event == "reset");
  BOOST_TEST(after.id == std::to_string(start + 2));
  // An id from this index resumes as usual.
  auto resumed = first_event_for(start + 1);
  BOOST_TEST(resumed.event == "checkpoint.created");
  BOOST_TEST(resumed.id == std::to_string(start + 2));
}

BOOST_AUTO_TEST_CASE(server_rebuilds_evicted_bodies_from_the_store,
                     *boost::unit_test::timeout(120)) {
  const std::vector<std::string> uuids{"job-a", "job-b", "job-c"};
  store_backed_server tiny(uuids, /*budget_bytes=*/1, /*checkpoints_per_job=*/15);
  // The reference keeps every body (it has no store to rebuild them from).
  running_server reference(unlimited());
  for (const auto& uuid : uuids) publish_from(reference.srv, tiny.real(), uuid);
  client ref(reference.srv.port());
  client c(tiny.port());
  BOOST_TEST(eventually(
      [&] { return ref.get("/v1/post-training/jobs").body().find("job-c") != std::string::npos; }));

  for (const auto& uuid : uuids) {
    for (const std::string route : {"artifacts", "status"}) {
      const std::string target = "/v1/post-training/job/" + route + "?job_uuid=" + uuid;
      const auto want = body_and_etag(ref, target);
      const auto loads_before = ckptd::metrics::body_loads.value();
      BOOST_TEST((body_and_etag(c, target) == want), target);
      BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 1);

      // The ETag kept for the evicted body answers 304 without a load.
      auto not_modified = c.get(target, "If-None-Match: " + want.second + "\r\n");
      BOOST_TEST(not_modified.result_int() == 304);
      BOOST_TEST(header(not_modified, "ETag") == want.second);
      BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 1);

      // gzip of a rebuilt body: the same encoding and ETag as the reference's.
      const auto zipped = body_and_etag(c, target, "Accept-Encoding: gzip\r\n");
      const auto want_zipped = body_and_etag(ref, target, "Accept-Encoding: gzip\r\n");
      BOOST_TEST(zipped.second == want_zipped.second);
      BOOST_TEST(gunzip(zipped.first) == want.first);
      auto zipped_304 =
          c.get(target, "Accept-Encoding: gzip\r\nIf-None-Match: " + want_zipped.second + "\r\n");
      BOOST_TEST(zipped_304.result_int() == 304);
      BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 2);

      c.send("HEAD " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
      auto head = c.read(/*head=*/true);
      BOOST_TEST(head.result_int() == 200);
      BOOST_TEST(header(head, "Content-Length") == std::to_string(want.first.size()));
    }
  }
  auto text = c.get("/metrics").body();
  BOOST_TEST(exposition_problem(text) == "");
  BOOST_TEST(text.find("\nckptd_http_body_loads_total ") != std::string::npos);
  BOOST_TEST(text.find("\nckptd_http_body_cache_bytes ") != std::string::npos);
  BOOST_TEST(text.find("\nckptd_http_body_load_waiters ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(server_keeps_recently_used_bodies_within_budget,
                     *boost::unit_test::timeout(120)) {
  const auto one = api::make_cached_job("job-1", many_checkpoints(15), {});
  const std::size_t job_bytes = one.artifacts->held_bytes() + one.status->held_bytes();
  const std::size_t budget = job_bytes + job_bytes / 2;  // room for one job's bodies
  const double held_before = ckptd::metrics::body_cache_bytes.value();
  const auto loads_before = ckptd::metrics::body_loads.value();
  {
    store_backed_server s({"job-1", "job-2", "job-3"}, budget, /*checkpoints_per_job=*/15);
    client c(s.port());
    BOOST_TEST(eventually(
        [&] { return c.get("/v1/post-training/jobs").body().find("job-3") != std::string::npos; }));
    const double held = ckptd::metrics::body_cache_bytes.value() - held_before;
    BOOST_TEST(held > 0);
    BOOST_TEST(held <= static_cast<double>(budget));
    // The last published job kept its bodies: no load.
    BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-3").result_int() == 200);
    BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before);
    // The first lost them; reading it back makes it the one kept.
    BOOST_TEST(c.get("/v1/post-training/job/status?job_uuid=job-1").result_int() == 200);
    BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 1);
    BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-1").result_int() == 200);
    BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 1);
    BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-3").result_int() == 200);
    BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 2);
    BOOST_TEST(ckptd::metrics::body_cache_bytes.value() - held_before <=
               static_cast<double>(budget));
  }
  // A server gone gives back what it counted.
  BOOST_TEST(ckptd::metrics::body_cache_bytes.value() == held_before);
}

BOOST_AUTO_TEST_CASE(server_long_poll_on_an_evicted_job_loads_the_new_body,
                     *boost::unit_test::timeout(120)) {
  store_backed_server s({"job-1"});
  client c(s.port());
  const std::string target = "/v1/post-training/job/artifacts?job_uuid=job-1";
  http::response<http::string_body> first;
  poll_until([&] {
    first = c.get(target);
    return first.result_int() == 200;
  });
  const double held_before = ckptd::metrics::long_poll_waiters.value();
  c.send("GET " + target + " HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + header(first, "ETag") +
         "\r\nPrefer: wait=50\r\n\r\n");
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > held_before; }));
  store_job(s.real(), "job-1", many_checkpoints(4));
  publish_from(s.srv(), s.real(), "job-1");
  auto woken = c.read();
  BOOST_TEST(woken.result_int() == 200);
  BOOST_TEST(header(woken, "Preference-Applied") == "wait=50");
  BOOST_TEST(json::parse(woken.body()).at("checkpoints").as_array().size() == 4u);
}

BOOST_AUTO_TEST_CASE(server_prefers_a_newer_publish_to_a_load_in_flight,
                     *boost::unit_test::timeout(120)) {
  store_backed_server s({"job-1", "job-2"});
  client c(s.port());
  const std::string target = "/v1/post-training/job/artifacts?job_uuid=job-1";
  BOOST_TEST(eventually([&] { return c.get(target).result_int() == 200; }));

  // A load reads the three checkpoints, then is held at the gate...
  s.gate().close_for("job-1");
  const auto loads_before = ckptd::metrics::body_loads.value();
  const double parked_before = ckptd::metrics::body_load_waiters.value();
  client parked(s.port());
  client also_parked(s.port());
  parked.send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
  also_parked.send("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
  BOOST_REQUIRE(eventually([&] {
    return s.gate().waiting() && ckptd::metrics::body_load_waiters.value() == parked_before + 2;
  }));
  // ...while a fourth is indexed and published.
  store_job(s.real(), "job-1", many_checkpoints(4));
  publish_from(s.srv(), s.real(), "job-1");
  std::string published_etag;
  for (client* waiting : {&parked, &also_parked}) {
    auto newer = waiting->read();
    BOOST_TEST(newer.result_int() == 200);
    BOOST_TEST(json::parse(newer.body()).at("checkpoints").as_array().size() == 4u);
    published_etag = header(newer, "ETag");
  }
  BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 1);  // one for both
  s.gate().open();
  // The pool reads one job at a time, in order: once job-2's load is answered,
  // the stale load of job-1 is done too.
  BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-2").result_int() == 200);
  BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 2);
  // It replaced nothing: the published ETag still answers 304, with no load.
  auto same = c.get(target, "If-None-Match: " + published_etag + "\r\n");
  BOOST_TEST(same.result_int() == 304);
  BOOST_TEST(ckptd::metrics::body_loads.value() == loads_before + 2);
  auto fresh = c.get(target);
  BOOST_TEST(json::parse(fresh.body()).at("checkpoints").as_array().size() == 4u);
  BOOST_TEST(header(fresh, "ETag") == published_etag);
}

BOOST_AUTO_TEST_CASE(server_answers_404_or_500_when_the_store_cannot_rebuild,
                     *boost::unit_test::timeout(120)) {
  store_backed_server s({"job-1", "vanished"});
  client c(s.port());
  BOOST_TEST(eventually([&] {
    return c.get("/v1/post-training/jobs").body().find("vanished") != std::string::npos;
  }));
  // The job left the store before the daemon's forget reached the API.
  store::job_change removal;
  removal.job_uuid = "vanished";
  removal.remove_job = true;
  BOOST_REQUIRE(s.real().apply(removal).has_value());
  auto gone = c.get("/v1/post-training/job/status?job_uuid=vanished");
  check_error_body(gone, 404);
  BOOST_TEST(json::parse(gone.body()).at("detail").as_string().find("vanished") !=
             std::string::npos);
  // A store that cannot be read: the spec's 500, and the server goes on.
  s.gate().fail_reads = true;
  auto failed = c.get("/v1/post-training/job/artifacts?job_uuid=job-1");
  check_error_body(failed, 500);
  BOOST_TEST(json::parse(failed.body()).at("detail").as_string() ==
             "An unexpected error occurred. Our team has been notified.");
  s.gate().fail_reads = false;
  BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-1").result_int() == 200);
}

BOOST_AUTO_TEST_CASE(server_drops_a_parked_request_whose_client_left,
                     *boost::unit_test::timeout(120)) {
  store_backed_server s({"job-1"});
  client c(s.port());
  BOOST_TEST(eventually(
      [&] { return c.get("/v1/post-training/jobs").body().find("job-1") != std::string::npos; }));
  const std::size_t open_before = s.srv().open_connections();
  const double parked_before = ckptd::metrics::body_load_waiters.value();
  s.gate().close_for("job-1");
  {
    client leaving(s.port());
    leaving.send("GET /v1/post-training/job/artifacts?job_uuid=job-1 HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE(eventually([&] {
      return s.gate().waiting() && ckptd::metrics::body_load_waiters.value() == parked_before + 1;
    }));
    BOOST_TEST(s.srv().open_connections() == open_before + 1);
  }
  // Its connection is given back while the load is still held at the gate.
  BOOST_TEST(eventually([&] { return s.srv().open_connections() == open_before; }));
  BOOST_TEST(ckptd::metrics::body_load_waiters.value() == parked_before);
  BOOST_TEST(s.gate().waiting());
  s.gate().open();
  BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=job-1").result_int() == 200);
}

BOOST_AUTO_TEST_CASE(server_disconnects_slow_subscribers, *boost::unit_test::timeout(120)) {
  api::options opts = unlimited();
  opts.max_subscriber_queue_bytes = 64 * 1024;
  opts.write_timeout = 60s;
  // No store here: the reconnect below is served from memory alone.
  opts.recent_events = 4096;
  running_server s(opts);
  sse_client slow(s.srv.port(), "/v1/ckptd/events");
  slow.until([&] { return !slow.frames().empty(); });
  BOOST_TEST(ckptd::metrics::event_subscribers.value() >= 1);
  // The client reads nothing while far more than the socket buffers and the
  // queue bound can hold is published.
  const std::string blob(16 * 1024, 'x');
  std::uint64_t seq = 0;
  for (int batch = 0; batch < 100; ++batch) {
    std::vector<store::event> events;
    for (int i = 0; i < 20; ++i) {
      auto e = make_event(++seq, "j");
      e.data = R"({"pad":")" + blob + R"("})";
      events.push_back(std::move(e));
    }
    s.srv.publish_events(std::move(events));
  }
  // Draining now finds the end of the connection, before the last event.
  slow.until([&] { return slow.closed; });
  BOOST_TEST(slow.closed);
  BOOST_TEST(!slow.ended);  // cut off, not ended cleanly
  const auto got = slow.event_ids();
  BOOST_TEST(got.size() < seq);
  BOOST_TEST(eventually([&] { return ckptd::metrics::event_subscribers.value() == 0; }));
  // It reconnects with its last id and misses nothing.
  const std::uint64_t last = got.empty() ? 0 : got.back();
  sse_client again(s.srv.port(), "/v1/ckptd/events",
                   "Last-Event-ID: " + std::to_string(last) + "\r\n");
  again.until([&] { return again.events().size() >= seq - last; });
  BOOST_TEST(again.event_ids() == seq_range(last + 1, seq), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(server_bounds_subscribers, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.max_subscribers = 1;
  running_server s(opts);
  sse_client first(s.srv.port(), "/v1/ckptd/events");
  BOOST_TEST(first.head.result_int() == 200);
  first.until([&] { return !first.frames().empty(); });
  client second(s.srv.port());
  auto busy = second.get("/v1/ckptd/events");
  check_error_body(busy, 503);
  BOOST_TEST(header(busy, "Retry-After") == "1");
}

BOOST_AUTO_TEST_CASE(server_stop_ends_streams_and_waits, *boost::unit_test::timeout(60)) {
  auto s = std::make_unique<running_server>(unlimited());
  s->srv.publish("job-1", {});
  sse_client stream(s->srv.port(), "/v1/ckptd/events");
  stream.until([&] { return !stream.frames().empty(); });
  client c(s->srv.port());
  http::response<http::string_body> first;
  poll_until([&] {
    first = c.get("/v1/post-training/jobs");
    return first.body() != R"({"data":[]})";
  });
  c.send("GET /v1/post-training/jobs HTTP/1.1\r\nHost: x\r\nIf-None-Match: " +
         header(first, "ETag") + "\r\nPrefer: wait=50\r\n\r\n");
  BOOST_TEST(eventually([&] { return ckptd::metrics::long_poll_waiters.value() > 0; }));
  BOOST_TEST(s->srv.open_connections() == 2u);
  s.reset();
  auto answered = c.read();
  BOOST_TEST(answered.result_int() == 304);
  BOOST_TEST(!answered.keep_alive());
  stream.until([&] { return stream.closed; });
  BOOST_TEST(stream.ended);
}

BOOST_AUTO_TEST_CASE(server_metrics_parse, *boost::unit_test::timeout(60)) {
  api::options opts;
  opts.rate_limit = 0.01;
  opts.rate_burst = 3;
  running_server s(opts);
  client c(s.srv.port());
  BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 200);
  BOOST_TEST(c.get("/v1/post-training/job/artifacts?job_uuid=none").result_int() == 404);
  const double limited_before = ckptd::metrics::http_rate_limited.value();
  auto text = c.get("/metrics");
  BOOST_TEST(text.result_int() == 200);
  BOOST_TEST(header(text, "Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 429);
  BOOST_TEST(ckptd::metrics::http_rate_limited.value() == limited_before + 1);
  BOOST_TEST(exposition_problem(text.body()) == "");
  BOOST_TEST(text.body().find(R"(ckptd_http_requests_total{route="jobs",code="200"} 1)") !=
             std::string::npos);
  BOOST_TEST(text.body().find(R"(ckptd_http_requests_total{route="artifacts",code="404"} 1)") !=
             std::string::npos);
  BOOST_TEST(text.body().find("ckptd_http_open_connections ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(server_requires_bearer_token, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.auth_tokens = {"s3cret"};
  running_server s(opts);
  client c(s.srv.port());
  auto refused = c.get("/v1/post-training/jobs");
  check_error_body(refused, 401);
  BOOST_TEST(header(refused, "WWW-Authenticate").starts_with("Bearer"));
  BOOST_TEST(refused.keep_alive());
  check_error_body(c.get("/v1/post-training/jobs", "Authorization: Bearer nope\r\n"), 401);
  BOOST_TEST(c.get("/v1/post-training/jobs", "Authorization: Bearer s3cret\r\n").result_int() ==
             200);
  BOOST_TEST(c.get("/healthz").result_int() == 200);
  BOOST_TEST(c.get("/readyz").result_int() == 503);  // open, and not ready yet
  check_error_body(c.get("/metrics"), 401);
  check_error_body(c.get("/v1/ckptd/events"), 401);
  // reconfigure() changes the tokens of the live connection.
  api::options next = opts;
  next.auth_tokens = {"fresh"};
  s.srv.reconfigure(next);
  BOOST_TEST(eventually([&] {
    return c.get("/v1/post-training/jobs", "Authorization: Bearer fresh\r\n").result_int() == 200;
  }));
  check_error_body(c.get("/v1/post-training/jobs", "Authorization: Bearer s3cret\r\n"), 401);
}

BOOST_AUTO_TEST_CASE(server_cors_preflight, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.cors_origins = {"https://dash.example"};
  opts.auth_tokens = {"s3cret"};
  running_server s(opts);
  client c(s.srv.port());
  c.send(
      "OPTIONS /v1/post-training/job/status?job_uuid=j HTTP/1.1\r\nHost: x\r\n"
      "Origin: https://dash.example\r\nAccess-Control-Request-Method: GET\r\n"
      "Access-Control-Request-Headers: authorization, prefer\r\n\r\n");
  auto pre = c.read(/*head=*/true);
  BOOST_TEST(pre.result_int() == 204);
  BOOST_TEST(header(pre, "Access-Control-Allow-Origin") == "https://dash.example");
  BOOST_TEST(header(pre, "Access-Control-Allow-Headers").find("Authorization") !=
             std::string::npos);
  BOOST_TEST(header(pre, "Access-Control-Max-Age") != "<absent>");
  BOOST_TEST(header(pre, "Vary").find("Origin") != std::string::npos);
  auto simple = c.get("/v1/post-training/jobs",
                      "Origin: https://dash.example\r\nAuthorization: Bearer s3cret\r\n");
  BOOST_TEST(simple.result_int() == 200);
  BOOST_TEST(header(simple, "Access-Control-Allow-Origin") == "https://dash.example");
  BOOST_TEST(header(simple, "Access-Control-Expose-Headers").find("ETag") != std::string::npos);
  BOOST_TEST(header(simple, "Vary") == "Accept-Encoding, Origin");
  auto foreign = c.get("/v1/post-training/jobs",
                       "Origin: https://evil.example\r\nAuthorization: Bearer s3cret\r\n");
  BOOST_TEST(foreign.result_int() == 200);
  BOOST_TEST(header(foreign, "Access-Control-Allow-Origin") == "<absent>");
  BOOST_TEST(header(foreign, "Access-Control-Expose-Headers") == "<absent>");
}

BOOST_AUTO_TEST_CASE(server_answers_408_to_a_stalled_request, *boost::unit_test::timeout(60)) {
  api::options opts = unlimited();
  opts.read_timeout = 300ms;
  running_server s(opts);
  {
    client c(s.srv.port());
    c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");  // and nothing more
    auto res = c.read();
    check_error_body(res, 408);
    BOOST_TEST(!res.keep_alive());
    BOOST_TEST(c.closed_by_server());
  }
  {
    client c(s.srv.port());
    c.send(
        "POST /v1/post-training/job/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"");
    check_error_body(c.read(), 408);
    BOOST_TEST(c.closed_by_server());
  }
  {
    // A connection that never sends anything is just closed.
    client c(s.srv.port());
    char byte = 0;
    boost::system::error_code ec;
    const std::size_t n = c.socket.read_some(net::buffer(&byte, 1), ec);
    BOOST_TEST(n == 0u);
    BOOST_TEST((ec == net::error::eof || ec == net::error::connection_reset));
  }
  {
    // Requests that arrive in time are unaffected, on a kept-alive connection.
    client c(s.srv.port());
    BOOST_TEST(c.get("/healthz").result_int() == 200);
    BOOST_TEST(c.get("/healthz").result_int() == 200);
  }
}

BOOST_AUTO_TEST_CASE(server_reconfigure_changes_rate_limit, *boost::unit_test::timeout(60)) {
  api::options opts;
  opts.rate_limit = 0.01;
  opts.rate_burst = 1;
  running_server s(opts);
  client c(s.srv.port());
  BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 200);
  BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 429);
  api::options relaxed = opts;
  relaxed.rate_limit = 0;  // unlimited
  s.srv.reconfigure(relaxed);
  BOOST_TEST(eventually([&] { return c.get("/v1/post-training/jobs").result_int() == 200; }));
  for (int i = 0; i < 20; ++i) BOOST_TEST(c.get("/v1/post-training/jobs").result_int() == 200);
  api::options strict = opts;
  strict.rate_limit = 0.01;
  strict.rate_burst = 2;
  s.srv.reconfigure(strict);
  BOOST_TEST(eventually([&] { return c.get("/v1/post-training/jobs").result_int() == 429; }));
  BOOST_TEST(c.get("/healthz").result_int() == 200);
  BOOST_TEST(c.get("/healthz").keep_alive());
}

BOOST_AUTO_TEST_CASE(rate_limiter_reconfigure_keeps_share) {
  api::rate_limiter limiter({/*rate_per_second=*/1, /*burst=*/4}, 10);
  for (int i = 0; i < 4; ++i) BOOST_TEST(limiter.take("a", t0).allowed);
  BOOST_TEST(!limiter.take("a", t0).allowed);
  // Empty stays empty under a larger burst: no fresh burst for a throttled client.
  limiter.reconfigure({/*rate_per_second=*/1, /*burst=*/100}, 10);
  BOOST_TEST(!limiter.take("a", t0).allowed);
  BOOST_TEST(limiter.take("b", t0).allowed);
  limiter.reconfigure({/*rate_per_second=*/1, /*burst=*/100}, 1);
  BOOST_TEST(limiter.size() == 1u);
  limiter.reconfigure({/*rate_per_second=*/0, /*burst=*/1}, 10);
  BOOST_TEST(!limiter.enabled());
  BOOST_TEST(limiter.size() == 0u);
}

BOOST_AUTO_TEST_CASE(server_adopts_inherited_sockets, *boost::unit_test::timeout(60)) {
  // As systemd would: bound and listening before the server sees it.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  BOOST_REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  BOOST_REQUIRE(::listen(fd, 16) == 0);
  socklen_t length = sizeof address;
  BOOST_REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const std::uint16_t port = ntohs(address.sin_port);

  std::vector<int> fds = {fd};
  // A second one over IPv6, where the host has it.
  const int fd6 = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 address6{};
  address6.sin6_family = AF_INET6;
  address6.sin6_addr = in6addr_loopback;
  const bool have_v6 = fd6 >= 0 &&
                       ::bind(fd6, reinterpret_cast<sockaddr*>(&address6), sizeof address6) == 0 &&
                       ::listen(fd6, 16) == 0;
  if (have_v6) {
    fds.push_back(fd6);
  } else if (fd6 >= 0) {
    ::close(fd6);
  }

  api::options opts = unlimited();
  opts.listen_fds = fds;
  opts.listen_port = 1;  // ignored: nothing is bound
  net::io_context ctx;
  api::server srv(ctx, opts);
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
  BOOST_TEST(srv.port() == port);
  BOOST_TEST(
      logged.find("listening on 127.0.0.1:" + std::to_string(port) + "\n") != std::string::npos,
      logged);
  std::thread thread([&] { ctx.run(); });
  {
    client c(port);
    BOOST_TEST(c.get("/healthz").result_int() == 200);
    BOOST_TEST(srv.open_connections() == 1u);
  }
  if (have_v6) {
    socklen_t length6 = sizeof address6;
    BOOST_REQUIRE(::getsockname(fd6, reinterpret_cast<sockaddr*>(&address6), &length6) == 0);
    const std::uint16_t port6 = ntohs(address6.sin6_port);
    BOOST_TEST(logged.find("listening on [::1]:" + std::to_string(port6) + "\n") !=
               std::string::npos);
    net::io_context cctx;
    tcp::socket sock(cctx);
    sock.connect(tcp::endpoint(net::ip::make_address("::1"), port6));
    net::write(sock, net::buffer(std::string("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(sock, buffer, res);
    BOOST_TEST(res.result_int() == 200);
  }
  BOOST_TEST(eventually([&] { return srv.open_connections() == 0u; }));
  net::post(ctx, [&] { srv.stop(); });
  thread.join();
}

BOOST_AUTO_TEST_SUITE_END()
