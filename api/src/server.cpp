// The I/O shell of ckptd::api: accept connections, parse HTTP/1.1, enforce
// the per-connection limits, and write what router.cpp decides; hold
// long-polls and feed event streams.
//
// One coroutine per connection reads a request, answers it and reads the
// next, so pipelined requests are answered in order and at most one request
// per connection is in flight. Everything runs on the io_context's thread;
// other threads only post to it. The exceptions read RocksDB, on a one-thread
// pool of the server's own: the event log, for a client reconnecting from
// further back than the in-memory ring, and a job whose bodies the catalog
// evicted.
//
// Waiting costs no thread: a held long-poll is a timer in `waiters_`, keyed
// by the body it waits on, and publish() cancels the timers of the bodies it
// replaces; an event stream is a timer and a queue in `subscribers_`; a
// request parked on an evicted job is a timer in that job's load in `loads_`.

#include <ckptd/api.hpp>
#include <ckptd/log.hpp>
#include <ckptd/metrics.hpp>

#include "artifacts_json.hpp"
#include "catalog.hpp"
#include "events.hpp"
#include "rate_limiter.hpp"
#include "router.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <exception>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

namespace ckptd::api {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using steady_clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Boost 1.81 has no bare `as_tuple` default token: spell it out at each call,
// so a closed peer or a timeout is an `if`, not an exception.
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Bytes asked for while waiting for the first byte of the next request.
constexpr std::size_t idle_read_bytes = 4096;
// After the last response on a connection, its unread input is drained for at
// most this long and this much, so closing does not reset the connection (a
// RST can destroy the response before the client has read it).
constexpr auto linger_time = std::chrono::seconds(1);
constexpr std::size_t linger_bytes = 256 * 1024;
// Connections over max_connections are answered with one pre-built 503 and
// closed. Each costs a socket, a coroutine frame and about 1 KiB for at most
// reject_write_time + linger_time; at most max_rejecting are turned away at
// once (about 32 MiB at the bound). Beyond it the accept loop pauses for
// accept_pause_while_rejecting: the kernel's listen queue holds the newcomers,
// and they get their 503 a moment later instead of a bare close.
constexpr std::size_t max_rejecting = 16384;
constexpr auto reject_write_time = std::chrono::seconds(2);
constexpr auto accept_pause_while_rejecting = std::chrono::milliseconds(10);
// Pause after an accept failure such as EMFILE, so the loop does not spin.
constexpr auto accept_retry_delay = std::chrono::milliseconds(100);
// Accept failures are logged at most once per this interval.
constexpr auto accept_log_interval = std::chrono::seconds(10);
// Events read from the store per page when replaying history; the page is
// written out before the next is read, so a long replay needs little memory.
constexpr std::size_t replay_page_events = 1000;
// Store reads that may find the ring still ahead of them before the client
// gets a reset (only an event published without being stored causes that).
constexpr int max_replay_gaps = 3;
// Time allowed for the last chunk of an event stream when the server stops.
constexpr auto stream_goodbye_time = std::chrono::seconds(1);
// Retry-After of a 503 for too many waiters or streams.
constexpr auto busy_retry_after = std::chrono::seconds(1);

struct connection {
  explicit connection(tcp::socket socket)
      : stream(std::move(socket)), deadline(stream.get_executor()) {}
  beast::tcp_stream stream;
  // The request deadline (read_timeout). Beast's own stream timeout closes
  // the socket when it fires, which leaves no way to answer 408; this timer
  // only cancels the read, so the answer can still go out.
  net::steady_timer deadline;
  std::uint64_t deadline_generation = 0;
  bool deadline_hit = false;
  bool writing = false;  // stop() lets a response being written finish
};

void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("http connection failed: ", ex.what());
  } catch (...) {
    log::error("http connection failed: unknown exception");
  }
}

// Requests from one IPv6 /64 share a bucket: a single host commonly holds a
// whole /64, and keying on full addresses would let it mint fresh buckets.
std::string client_key(const tcp::endpoint& peer) {
  const net::ip::address address = peer.address();
  if (address.is_v6()) {
    const net::ip::address_v6 v6 = address.to_v6();
    if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).to_string();
    auto bytes = v6.to_bytes();
    for (std::size_t i = 8; i < bytes.size(); ++i) bytes[i] = 0;
    return net::ip::address_v6(bytes).to_string() + "/64";
  }
  return address.to_string();
}

std::string endpoint_text(const tcp::endpoint& ep) {
  const net::ip::address address = ep.address();
  const std::string host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  return host + ":" + std::to_string(ep.port());
}

bool is_http_category(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category();
}

// A parse error worth answering (the peer sent something wrong), as opposed
// to the connection ending, timing out or being cancelled.
bool is_protocol_error(const error_code& ec) {
  return is_http_category(ec) && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

unsigned status_for_parse_error(const error_code& ec) {
  if (ec == http::error::header_limit) return 431;
  if (ec == http::error::body_limit) return 413;
  return 400;
}

std::string detail_for_parse_error(const error_code& ec, const options& opts) {
  if (ec == http::error::header_limit) {
    return "The request header is larger than " + std::to_string(opts.max_header_bytes) + " bytes.";
  }
  if (ec == http::error::body_limit) {
    return "The request body is larger than " + std::to_string(opts.max_body_bytes) + " bytes.";
  }
  return "The request could not be parsed as HTTP/1.1: " + ec.message() + ".";
}

// IMF-fixdate for the Date header, built by hand: strftime's names follow the
// locale.
std::string http_date(std::time_t t) {
  static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[40];
  const int n = std::snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              days[static_cast<std::size_t>(tm.tm_wday)], tm.tm_mday,
                              months[static_cast<std::size_t>(tm.tm_mon)], tm.tm_year + 1900,
                              tm.tm_hour, tm.tm_min, tm.tm_sec);
  return std::string(text, static_cast<std::size_t>(n));
}

// The status line and header block of `res`, ending with the blank line.
// Written by hand rather than through beast::http::fields: a response is one
// string append per header, with no field table to allocate and walk. `date`
// may be empty (a 5xx may go without Date, RFC 9110 section 6.6.1).
std::string serialize_head(const response& res, unsigned version, bool keep_alive,
                           std::string_view date) {
  std::string out;
  out.reserve(256);
  const auto line = [&out](std::string_view name, std::string_view value) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  };
  out += version >= 11 ? "HTTP/1.1 " : "HTTP/1.0 ";
  json_text::append_integer(out, res.status);
  out += ' ';
  out += http::obsolete_reason(static_cast<http::status>(res.status));
  out += "\r\n";
  line("Server", "ckptd");
  if (!date.empty()) line("Date", date);
  // 204 and 304 have no body and no length of their own; HEAD announces the
  // GET's length.
  const bool bodiless = res.status == 304 || res.status == 204;
  if (!bodiless) line("Content-Type", res.content_type);
  if (!res.content_encoding.empty()) line("Content-Encoding", res.content_encoding);
  if (!res.etag.empty()) line("ETag", res.etag);
  if (!res.cache_control.empty()) line("Cache-Control", res.cache_control);
  if (!res.vary.empty()) line("Vary", res.vary);
  if (!res.allow.empty()) line("Allow", res.allow);
  if (!res.www_authenticate.empty()) line("WWW-Authenticate", res.www_authenticate);
  if (!res.preference_applied.empty()) line("Preference-Applied", res.preference_applied);
  for (const auto& [name, value] : res.cors) line(name, value);
  if (res.retry_after > std::chrono::nanoseconds::zero()) {
    out += "Retry-After: ";
    json_text::append_integer(out, retry_after_seconds(res.retry_after));
    out += "\r\nretry-after-ms: ";
    json_text::append_integer(out, retry_after_milliseconds(res.retry_after));
    out += "\r\n";
  }
  // HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes unless told.
  if (version >= 11 && !keep_alive) line("Connection", "close");
  if (version < 11 && keep_alive) line("Connection", "keep-alive");
  if (!bodiless) {
    out += "Content-Length: ";
    json_text::append_integer(out,
                              static_cast<std::int64_t>(res.body->size() + res.body_tail.size()));
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

// The whole answer to a connection over max_connections, built once: it is
// the same bytes every time, and a burst of them should cost only a write.
const std::string& too_many_connections_bytes() {
  static const std::string bytes = [] {
    response res = error_response(503, "ckptd has too many open connections; try again later.");
    res.retry_after = busy_retry_after;
    return serialize_head(res, 11, /*keep_alive=*/false, /*date=*/{}) + *res.body;
  }();
  return bytes;
}

// The fixed part of a 429 (status line and every header but Date,
// Retry-After and retry-after-ms, without the blank line), serialized once
// per HTTP version and keep-alive: a flood of refused requests should cost
// no header building.
const std::string& rate_limited_head(unsigned version, bool keep_alive) {
  static const std::array<std::string, 4> heads = [] {
    std::array<std::string, 4> out;
    for (std::size_t i = 0; i < out.size(); ++i) {
      response res = rate_limited_response(std::chrono::nanoseconds::zero());
      res.retry_after = std::chrono::nanoseconds::zero();  // written per request
      out[i] = serialize_head(res, (i & 1) != 0 ? 11 : 10, (i & 2) != 0, /*date=*/{});
      out[i].resize(out[i].size() - 2);  // the varying headers and the blank line follow
    }
    return out;
  }();
  return heads[(version >= 11 ? 1U : 0U) | (keep_alive ? 2U : 0U)];
}

// Asio's transfer_all hands the socket at most 64 KiB per write, so a large
// body (300 KB for a job of 1,000 checkpoints) cost five sendmsg calls where
// the kernel usually takes it all in one. Offer everything left each time;
// async_write still stops once the buffers are consumed.
std::size_t everything_left(const error_code& ec, std::size_t /*sent*/) {
  return ec ? 0 : std::numeric_limits<std::size_t>::max();
}

// Writes `buffers` within `timeout`, flagged as writing so that stop() lets
// the write finish. False when the connection failed or timed out.
template <typename ConstBufferSequence>
net::awaitable<bool> send_all(connection& conn, const ConstBufferSequence& buffers,
                              steady_clock::duration timeout) {
  conn.writing = true;
  conn.stream.expires_after(timeout);
  auto [ec, n] = co_await net::async_write(conn.stream, buffers, everything_left, use_tuple);
  conn.writing = false;
  co_return !ec;
}

std::string_view header_value(const http::request<http::string_body>& req, http::field f) {
  const auto it = req.find(f);
  return it == req.end() ? std::string_view() : std::string_view(it->value());
}

std::string_view header_value(const http::request<http::string_body>& req, std::string_view name) {
  const auto it = req.find(name);
  return it == req.end() ? std::string_view() : std::string_view(it->value());
}

// The buffer a connection's unread input is drained into before it closes.
net::mutable_buffer drain_buffer(beast::flat_buffer& buffer) {
  buffer.clear();
  return buffer.prepare(idle_read_bytes);
}

// Whether a held long-poll's client is still there. The hold's timer is
// cancelled when the client goes; `timer` is null once the hold is over, so a
// late completion touches nothing.
struct peer_watch {
  net::steady_timer* timer = nullptr;
  bool gone = false;
};

// Waits (without reading) until the socket is readable. Readable with nothing
// to read means the peer closed or reset: the hold ends and its waiter slot is
// given back at once, not when the wait runs out. Bytes waiting (a pipelined
// request) end the watch, since they belong to the next request.
void watch_peer(tcp::socket& socket, std::shared_ptr<peer_watch> watch) {
  socket.async_wait(tcp::socket::wait_read, [&socket, watch](error_code ec) {
    if (ec || watch->timer == nullptr) return;  // cancelled: the hold is over
    char byte = 0;
    const ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      watch_peer(socket, std::move(watch));
      return;
    }
    watch->gone = true;
    watch->timer->cancel();
  });
}

// What one store read for a replaying client found.
struct replay_page {
  bool failed = false;
  std::uint64_t first_seq = 0;  // of the log, when read
  std::uint64_t last_seq = 0;
  std::vector<store::event> events;  // after the asked seq, at most replay_page_events
};

// Runs on the server's pool: RocksDB reads never block the HTTP thread.
net::awaitable<replay_page> read_replay_page(const store::index* log, std::uint64_t after,
                                             bool events_too) {
  replay_page page;
  try {
    page.first_seq = log->first_event_seq();
    page.last_seq = log->last_event_seq();
    if (events_too) {
      auto events = log->events_after(after, replay_page_events);
      if (events) {
        page.events = std::move(*events);
      } else {
        log::error("cannot read the event log: ", events.error().message());
        page.failed = true;
      }
    }
  } catch (const std::exception& e) {
    log::error("cannot read the event log: ", e.what());
    page.failed = true;
  }
  co_return page;
}

// Runs on the server's pool: one job read back from the store, both bodies
// rebuilt exactly as publish() builds them.
loaded_job read_job(const store::index& index, std::string job_uuid) {
  loaded_job out;
  out.job_uuid = std::move(job_uuid);
  out.result = loaded_job::outcome::failed;
  try {
    auto job = index.find_job(out.job_uuid);
    if (!job) {
      log::error("cannot read job ", out.job_uuid, " from the index: ", job.error().message());
      return out;
    }
    if (!*job) {
      out.result = loaded_job::outcome::gone;
      return out;
    }
    auto checkpoints = index.checkpoints(out.job_uuid);
    if (!checkpoints) {
      log::error("cannot read checkpoints of job ", out.job_uuid, ": ",
                 checkpoints.error().message());
      return out;
    }
    out.bodies = make_cached_job(out.job_uuid, std::move(*checkpoints), status_of(**job));
    out.result = loaded_job::outcome::found;
  } catch (const std::exception& e) {
    log::error("cannot rebuild the bodies of job ", out.job_uuid, ": ", e.what());
  }
  return out;
}

}  // namespace

class server::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(net::io_context& ctx, options opts)
      : ctx_(ctx),
        opts_(std::move(opts)),
        catalog_(body_budget(opts_)),
        limiter_({opts_.rate_limit, opts_.rate_burst}, opts_.rate_clients),
        ring_(opts_.recent_events) {
    if (opts_.event_store != nullptr) pool_ = std::make_unique<net::thread_pool>(1);
  }
  ~impl() {
    if (pool_) pool_->join();
    metrics::body_cache_bytes.dec(static_cast<double>(reported_cache_bytes_));
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  void start();
  void stop();
  void reconfigure(const options& opts);
  // Waits for a store read in progress to finish and runs no more; its
  // completion is then queued on the io_context (while that still exists).
  void join_pool() {
    if (pool_) pool_->join();
  }
  void put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
           std::shared_ptr<const cached_body> status);
  void erase(const std::string& job_uuid);
  void deliver(std::vector<store::event> events);

  net::io_context& ctx_;
  // Replaced as a whole by reconfigure(), on the io_context's thread; sessions
  // read it through a reference, so each request sees the current limits.
  options opts_;
  std::atomic<bool> ready_{false};
  std::atomic<std::uint16_t> port_{0};
  std::atomic<std::size_t> open_{0};

 private:
  // Keeps a connection on the list stop() walks for the life of its
  // coroutine, and gives back the slot in `counter` that the accept loop took
  // for it when spawning (taken there, so a burst of accepts cannot overshoot
  // max_connections before the sessions start).
  class registration {
   public:
    registration(impl& owner, connection* conn, std::size_t& counter)
        : owner_(owner), it_(owner.live_.insert(owner.live_.end(), conn)), counter_(counter) {
      owner_.open_.fetch_add(1, std::memory_order_relaxed);
      metrics::http_open_connections.inc();
    }
    ~registration() {
      owner_.live_.erase(it_);
      --counter_;
      owner_.open_.fetch_sub(1, std::memory_order_relaxed);
      metrics::http_open_connections.dec();
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;

   private:
    impl& owner_;
    std::list<connection*>::iterator it_;
    std::size_t& counter_;
  };

  // One read of a job whose bodies were evicted, shared by every request
  // parked on it until it is settled: by the read, or sooner by a publish or
  // forget of the job.
  struct body_load {
    std::list<net::steady_timer*> parked;  // cancelled once settled
    std::optional<loaded_job> result;
  };

  // One open event stream.
  struct subscriber {
    explicit subscriber(net::any_io_executor ex) : wake(std::move(ex)) {}
    connection* conn = nullptr;
    std::string job;            // only this job's events; empty: all
    std::string queue;          // frames not yet handed to the socket
    std::size_t in_flight = 0;  // bytes being written
    std::uint64_t cursor = 0;   // newest seq already considered
    bool live = false;          // past its replay: deliver() feeds it
    bool overflow = false;      // fell too far behind: to be disconnected
    net::steady_timer wake;     // cancelled when there is something to send
  };

  static net::awaitable<void> accept_loop(std::shared_ptr<impl> self,
                                          std::shared_ptr<tcp::acceptor> acceptor);
  void listen_on_address();
  void adopt(int fd);
  static net::awaitable<void> serve(std::shared_ptr<impl> self, std::shared_ptr<connection> conn,
                                    std::string client);
  static net::awaitable<void> reject(std::shared_ptr<impl> self, std::shared_ptr<connection> conn);
  static net::awaitable<void> stream_events(std::shared_ptr<impl> self,
                                            std::shared_ptr<connection> conn, response res,
                                            unsigned version);

  // These are awaited at once by serve(), reject() or stream_events(), whose
  // frames own the connection, buffer and request they are given.
  net::awaitable<bool> write(connection& conn, const response& res, unsigned version,
                             bool keep_alive, std::chrono::milliseconds timeout);
  net::awaitable<bool> write_rate_limited(connection& conn, unsigned version, bool keep_alive,
                                          bool send_body, std::chrono::nanoseconds wait);
  static net::awaitable<void> linger_and_close(connection& conn, net::mutable_buffer scratch);
  net::awaitable<std::optional<response>> hold(connection& conn,
                                               const http::request<http::string_body>& req,
                                               response res);
  net::awaitable<bool> replay(subscriber& sub, std::optional<std::uint64_t> last_event_id,
                              bool chunked);
  net::awaitable<bool> flush(subscriber& sub, bool chunked);
  net::awaitable<std::optional<loaded_job>> load(connection& conn, std::string job_uuid);
  net::awaitable<std::optional<response>> answer(connection& conn,
                                                 const http::request<http::string_body>& req);

  // Without a store to rebuild them from, no body may be evicted.
  static std::size_t body_budget(const options& opts) {
    return opts.event_store != nullptr ? opts.body_cache_bytes : 0;
  }
  void start_load(const std::string& job_uuid, std::shared_ptr<body_load> load);
  void finish_load(const std::string& job_uuid, const std::shared_ptr<body_load>& load,
                   loaded_job result);
  void settle_load(const std::string& job_uuid, loaded_job result);
  void report_cache();

  void arm_deadline(const std::shared_ptr<connection>& conn);
  static void disarm_deadline(connection& conn);
  response respond(const http::request<http::string_body>& req, const loaded_job* loaded = nullptr);
  void finish(response& res, const http::request<http::string_body>& req);
  void count(const response& res, steady_clock::time_point started);
  void count(route_id route, unsigned status, steady_clock::time_point started, bool timed = true);
  void wake(const std::string& key);
  void queue_for(subscriber& sub, const store::event& e);
  [[nodiscard]] std::string render_metrics() const;
  const std::string& date();

  std::vector<std::shared_ptr<tcp::acceptor>> acceptors_;
  catalog catalog_;
  rate_limiter limiter_;
  bool started_ = false;
  bool stopping_ = false;
  std::list<connection*> live_;
  std::size_t connections_ = 0;
  std::size_t rejecting_ = 0;
  std::time_t date_time_ = -1;
  std::string date_text_;

  std::unordered_multimap<std::string, net::steady_timer*> waiters_;
  std::unordered_map<std::string, std::shared_ptr<body_load>> loads_;
  std::size_t reported_cache_bytes_ = 0;  // what ckptd_http_body_cache_bytes has of ours
  std::list<subscriber*> subscribers_;
  event_ring ring_;
  std::unique_ptr<net::thread_pool> pool_;  // only with an event_store
  // ckptd_http_requests_total, by (route label, status).
  std::map<std::pair<std::string_view, unsigned>, std::uint64_t> requests_;
};

void server::impl::start() {
  if (started_) return;
  started_ = true;
  if (opts_.listen_fds.empty()) {
    listen_on_address();
  } else {
    for (int fd : opts_.listen_fds) adopt(fd);
  }
  for (const auto& acceptor : acceptors_) {
    net::co_spawn(ctx_, accept_loop(shared_from_this(), acceptor), log_exception);
  }
}

void server::impl::listen_on_address() {
  error_code ec;
  tcp::endpoint endpoint;
  const net::ip::address address = net::ip::make_address(opts_.listen_host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, opts_.listen_port);
  } else {
    tcp::resolver resolver(ctx_);
    const auto results = resolver.resolve(opts_.listen_host, std::to_string(opts_.listen_port),
                                          tcp::resolver::passive, ec);
    if (ec || results.empty()) {
      throw std::system_error(ec ? std::error_code(ec) : std::make_error_code(std::errc::io_error),
                              "cannot resolve listen address " + opts_.listen_host);
    }
    endpoint = results.begin()->endpoint();
  }
  const std::string where = "cannot listen on " + endpoint_text(endpoint);
  auto acceptor = std::make_shared<tcp::acceptor>(ctx_);
  if (acceptor->open(endpoint.protocol(), ec); ec) throw std::system_error(ec, where);
  if (acceptor->set_option(net::socket_base::reuse_address(true), ec); ec) {
    throw std::system_error(ec, where);
  }
  if (acceptor->bind(endpoint, ec); ec) throw std::system_error(ec, where);
  if (acceptor->listen(net::socket_base::max_listen_connections, ec); ec) {
    throw std::system_error(ec, where);
  }
  const tcp::endpoint bound = acceptor->local_endpoint(ec);
  if (ec) throw std::system_error(ec, where);
  port_ = bound.port();
  log::notice("listening on ", endpoint_text(bound));
  acceptors_.push_back(std::move(acceptor));
}

// A socket handed over by systemd is already bound and listening; its
// address family is asked of the kernel, since Asio must be told it.
void server::impl::adopt(int fd) {
  const std::string where = "cannot serve inherited socket " + std::to_string(fd);
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw std::system_error(errno, std::generic_category(), where);
  }
  if (address.ss_family != AF_INET && address.ss_family != AF_INET6) {
    throw std::system_error(std::make_error_code(std::errc::address_family_not_supported),
                            where + " (not a TCP/IP socket)");
  }
  const tcp protocol = address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4();
  auto acceptor = std::make_shared<tcp::acceptor>(ctx_);
  error_code ec;
  if (acceptor->assign(protocol, fd, ec); ec) throw std::system_error(ec, where);
  const tcp::endpoint bound = acceptor->local_endpoint(ec);
  if (ec) throw std::system_error(ec, where);
  if (acceptors_.empty()) port_ = bound.port();
  log::notice("listening on ", endpoint_text(bound));
  acceptors_.push_back(std::move(acceptor));
}

void server::impl::stop() {
  if (stopping_) return;
  stopping_ = true;
  error_code ignored;
  for (const auto& acceptor : acceptors_) acceptor->close(ignored);
  // A connection writing a response finishes it and then closes (it checks
  // stopping_); one waiting for input is woken with operation_aborted.
  for (connection* conn : live_) {
    if (!conn->writing) conn->stream.cancel();
  }
  // Held long-polls answer with what they have; streams end.
  for (auto& [key, timer] : waiters_) timer->cancel();
  for (subscriber* sub : subscribers_) sub->wake.cancel();
}

void server::impl::reconfigure(const options& opts) {
  // The listening sockets and the event log stay as they are.
  options next = opts;
  next.listen_host = opts_.listen_host;
  next.listen_port = opts_.listen_port;
  next.listen_fds = opts_.listen_fds;
  next.event_store = opts_.event_store;
  opts_ = std::move(next);
  limiter_.reconfigure({opts_.rate_limit, opts_.rate_burst}, opts_.rate_clients);
  ring_.set_capacity(opts_.recent_events);
  catalog_.set_budget(body_budget(opts_));
  report_cache();
}

void server::impl::put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
                       std::shared_ptr<const cached_body> status) {
  // Requests parked on a read of this job get these newer bodies at once;
  // the read, when it ends, is dropped (see finish_load).
  if (loads_.contains(job_uuid)) {
    settle_load(job_uuid, {job_uuid, loaded_job::outcome::found, {artifacts, status}});
  }
  const bool new_job = catalog_.put(job_uuid, std::move(artifacts), std::move(status));
  report_cache();
  wake("a/" + job_uuid);
  wake("s/" + job_uuid);
  if (new_job) wake("j");
}

void server::impl::erase(const std::string& job_uuid) {
  if (loads_.contains(job_uuid)) settle_load(job_uuid, {job_uuid, loaded_job::outcome::gone, {}});
  if (!catalog_.erase(job_uuid)) return;
  report_cache();
  wake("a/" + job_uuid);
  wake("s/" + job_uuid);
  wake("j");
}

void server::impl::start_load(const std::string& job_uuid, std::shared_ptr<body_load> load) {
  metrics::body_loads.inc();
  // The pool holds no reference to the impl: the last one must never be
  // dropped on the pool's thread, whose join the impl's destructor waits for.
  // The io_context outlives the pool (~server joins it).
  net::post(*pool_, [weak = weak_from_this(), &ctx = ctx_, index = opts_.event_store,
                     uuid = job_uuid, load = std::move(load)]() mutable {
    loaded_job result = read_job(*index, uuid);
    net::post(ctx, [weak = std::move(weak), uuid = std::move(uuid), load = std::move(load),
                    result = std::move(result)]() mutable {
      if (auto self = weak.lock()) self->finish_load(uuid, load, std::move(result));
    });
  });
}

void server::impl::finish_load(const std::string& job_uuid, const std::shared_ptr<body_load>& load,
                               loaded_job result) {
  const auto it = loads_.find(job_uuid);
  // Settled meanwhile by a publish (whose bodies are newer) or a forget.
  if (it == loads_.end() || it->second != load) return;
  if (result.result == loaded_job::outcome::found && catalog_.restore(job_uuid, result.bodies)) {
    // The store was ahead of the last publish (its publish is on the way):
    // long-polls holding the old ETag have news.
    wake("a/" + job_uuid);
    wake("s/" + job_uuid);
  }
  report_cache();
  settle_load(job_uuid, std::move(result));
}

void server::impl::settle_load(const std::string& job_uuid, loaded_job result) {
  const auto it = loads_.find(job_uuid);
  const std::shared_ptr<body_load> load = std::move(it->second);
  loads_.erase(it);
  load->result = std::move(result);
  for (net::steady_timer* timer : load->parked) timer->cancel();
}

void server::impl::report_cache() {
  const std::size_t held = catalog_.held_bytes();
  if (held == reported_cache_bytes_) return;  // the usual case: spare the atomic
  metrics::body_cache_bytes.inc(static_cast<double>(held) -
                                static_cast<double>(reported_cache_bytes_));
  reported_cache_bytes_ = held;
}

void server::impl::wake(const std::string& key) {
  const auto [first, last] = waiters_.equal_range(key);
  for (auto it = first; it != last; ++it) it->second->cancel();
}

void server::impl::queue_for(subscriber& sub, const store::event& e) {
  if (e.seq <= sub.cursor) return;
  sub.cursor = e.seq;
  if (sub.job.empty() || sub.job == e.job_uuid) append_sse_event(sub.queue, e);
}

void server::impl::deliver(std::vector<store::event> events) {
  for (store::event& e : events) {
    for (subscriber* sub : subscribers_) {
      if (sub->live) queue_for(*sub, e);
    }
    ring_.push(std::move(e));
  }
  for (subscriber* sub : subscribers_) {
    if (!sub->live || sub->queue.empty()) continue;
    if (sub->queue.size() + sub->in_flight > opts_.max_subscriber_queue_bytes) {
      // Its client reads too slowly; it will reconnect with Last-Event-ID.
      sub->overflow = true;
      sub->queue.clear();
      sub->conn->stream.cancel();
    }
    sub->wake.cancel();
  }
}

net::awaitable<void> server::impl::accept_loop(std::shared_ptr<impl> self,
                                               std::shared_ptr<tcp::acceptor> acceptor) {
  auto last_log = steady_clock::time_point::min();
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(use_tuple);
    if (self->stopping_ || !acceptor->is_open()) co_return;
    if (ec) {
      // EMFILE and friends: the pending connection stays queued; wait a bit
      // rather than spinning on the same failure.
      const auto now = steady_clock::now();
      if (now - last_log >= accept_log_interval) {
        log::warning("cannot accept an http connection: ", ec.message());
        last_log = now;
      }
      net::steady_timer pause(self->ctx_, accept_retry_delay);
      co_await pause.async_wait(use_tuple);
      continue;
    }
    error_code peer_ec;
    const tcp::endpoint peer = socket.remote_endpoint(peer_ec);
    if (peer_ec) continue;  // already gone
    auto conn = std::make_shared<connection>(std::move(socket));
    if (self->connections_ >= self->opts_.max_connections) {
      ++self->rejecting_;
      net::co_spawn(self->ctx_, reject(self, std::move(conn)), log_exception);
      // At the bound, the next connection waits in the listen queue until a
      // rejection ends (see max_rejecting).
      while (self->rejecting_ >= max_rejecting && !self->stopping_) {
        net::steady_timer pause(self->ctx_, accept_pause_while_rejecting);
        co_await pause.async_wait(use_tuple);
      }
      continue;
    }
    ++self->connections_;
    net::co_spawn(self->ctx_, serve(self, std::move(conn), client_key(peer)), log_exception);
  }
}

net::awaitable<void> server::impl::reject(std::shared_ptr<impl> self,
                                          std::shared_ptr<connection> conn) {
  registration reg(*self, conn.get(), self->rejecting_);
  // Answered at once, without reading the request: the 503 is the same
  // whatever was asked, and a client reads it after sending its request.
  if (!co_await send_all(*conn, net::buffer(too_many_connections_bytes()), reject_write_time)) {
    co_return;
  }
  // A small buffer of its own: the request (if any) is only read to be dropped.
  std::array<char, 512> scratch;
  co_await linger_and_close(*conn, net::buffer(scratch));
}

void server::impl::arm_deadline(const std::shared_ptr<connection>& conn) {
  const std::uint64_t generation = ++conn->deadline_generation;
  conn->deadline_hit = false;
  conn->deadline.expires_after(opts_.read_timeout);
  conn->deadline.async_wait([weak = std::weak_ptr<connection>(conn), generation](error_code ec) {
    const auto c = weak.lock();
    // A wait that completed just before being re-armed still runs: the
    // generation tells it apart.
    if (ec || !c || c->deadline_generation != generation) return;
    c->deadline_hit = true;
    c->stream.cancel();
  });
}

void server::impl::disarm_deadline(connection& conn) {
  ++conn.deadline_generation;
  conn.deadline.cancel();
}

net::awaitable<void> server::impl::serve(std::shared_ptr<impl> self,
                                         std::shared_ptr<connection> conn, std::string client) {
  registration reg(*self, conn.get(), self->connections_);
  const options& opts = self->opts_;
  beast::flat_buffer buffer;
  bool first = true;

  // Answers a request that did not arrive whole within read_timeout, then
  // closes (what is left of it cannot be told from the next request).
  auto timed_out = [&]() -> response {
    response res = error_response(408, "The request was not received within " +
                                           std::to_string(opts.read_timeout.count()) + " ms.");
    return res;
  };

  for (;;) {
    if (self->stopping_) break;
    // Wait for the next request's first byte under the idle timeout (the read
    // timeout for a new connection); pipelined input is already buffered.
    // Nothing has arrived, so a timeout here just closes.
    if (buffer.size() == 0) {
      conn->stream.expires_after(first ? opts.read_timeout : opts.idle_timeout);
      auto [ec, n] =
          co_await conn->stream.async_read_some(buffer.prepare(idle_read_bytes), use_tuple);
      if (ec) co_return;  // closed by the peer, idle too long, or stop()
      buffer.commit(n);
      if (self->stopping_) break;
    }
    first = false;
    // From its first byte, a request has read_timeout to arrive whole.
    conn->stream.expires_never();
    self->arm_deadline(conn);

    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(opts.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser.body_limit(opts.max_body_bytes);
    auto [header_ec, header_n] =
        co_await http::async_read_header(conn->stream, buffer, parser, use_tuple);
    if (header_ec) {
      disarm_deadline(*conn);
      response res;
      if (conn->deadline_hit && !self->stopping_) {
        res = timed_out();
      } else if (is_protocol_error(header_ec)) {
        res = error_response(status_for_parse_error(header_ec),
                             detail_for_parse_error(header_ec, opts));
      } else {
        co_return;
      }
      if (co_await self->write(*conn, res, 11, /*keep_alive=*/false, opts.write_timeout)) {
        co_await linger_and_close(*conn, drain_buffer(buffer));
      }
      co_return;
    }
    const auto started = steady_clock::now();
    const auto& req = parser.get();
    const unsigned version = req.version();
    const bool head = req.method() == http::verb::head;
    const route_id route = route_of(req.target());

    // The rate limit comes before any other work on the request. Probes are
    // exempt: a liveness check must never be told 429.
    if (self->limiter_.enabled() && !is_probe(route)) {
      const auto verdict = self->limiter_.take(client, steady_clock::now());
      if (!verdict.allowed) {
        disarm_deadline(*conn);
        metrics::http_rate_limited.inc();
        // An unread body would be taken for the next request: close instead.
        const bool keep_alive = req.keep_alive() && parser.is_done() && !self->stopping_;
        bool sent = false;
        if (opts.cors_origins.empty()) {
          sent = co_await self->write_rate_limited(*conn, version, keep_alive, !head, verdict.wait);
        } else {
          // CORS headers depend on the request's Origin: built the usual way.
          response res = rate_limited_response(verdict.wait);
          res.send_body = !head;
          self->finish(res, req);
          sent = co_await self->write(*conn, res, version, keep_alive, opts.write_timeout);
        }
        self->count(route, 429, started);
        if (!sent) co_return;
        if (!keep_alive) break;
        continue;
      }
    }

    if (req.target().size() > opts.max_target_bytes) {
      disarm_deadline(*conn);
      response res = error_response(414, "The request target is longer than " +
                                             std::to_string(opts.max_target_bytes) + " bytes.");
      res.route = route;
      res.send_body = !head;
      self->finish(res, req);
      self->count(res, started);
      if (co_await self->write(*conn, res, version, /*keep_alive=*/false, opts.write_timeout)) {
        co_await linger_and_close(*conn, drain_buffer(buffer));
      }
      co_return;
    }

    if (!parser.is_done()) {
      auto [body_ec, body_n] = co_await http::async_read(conn->stream, buffer, parser, use_tuple);
      if (body_ec) {
        disarm_deadline(*conn);
        response res;
        if (conn->deadline_hit && !self->stopping_) {
          res = timed_out();
        } else if (is_protocol_error(body_ec)) {
          res = error_response(status_for_parse_error(body_ec),
                               detail_for_parse_error(body_ec, opts));
        } else {
          co_return;
        }
        res.route = route;
        res.send_body = !head;
        self->finish(res, parser.get());
        self->count(res, started);
        if (co_await self->write(*conn, res, version, /*keep_alive=*/false, opts.write_timeout)) {
          co_await linger_and_close(*conn, drain_buffer(buffer));
        }
        co_return;
      }
    }
    disarm_deadline(*conn);

    auto answered = co_await self->answer(*conn, parser.get());
    if (!answered) co_return;  // the client went away while its request waited
    response res = std::move(*answered);
    if (res.events) {
      if (self->subscribers_.size() >= opts.max_subscribers) {
        res = error_response(503, "Too many event streams are open; try again later.");
        res.route = route_id::events;
        res.retry_after = busy_retry_after;
      } else {
        self->finish(res, parser.get());
        self->count(res, started);
        co_await stream_events(self, conn, std::move(res), version);
        co_return;
      }
    }
    if (res.metrics) res.body = std::make_shared<const std::string>(self->render_metrics());
    self->finish(res, parser.get());
    const bool keep_alive = parser.get().keep_alive() && !self->stopping_;
    const bool sent = co_await self->write(*conn, res, version, keep_alive, opts.write_timeout);
    self->count(res, started);
    if (!sent) co_return;
    if (!keep_alive) break;
  }
  co_await linger_and_close(*conn, drain_buffer(buffer));
}

// The answer to a request, after holding a long-poll or loading an evicted
// job's bodies when it needs that. Nothing when the client went away meanwhile.
net::awaitable<std::optional<response>> server::impl::answer(
    connection& conn, const http::request<http::string_body>& req) {
  response res = respond(req);
  if (res.wait.count() > 0) {
    auto held = co_await hold(conn, req, std::move(res));
    if (!held) co_return std::nullopt;
    res = std::move(*held);
  }
  if (!res.load_job.empty()) {
    // The job's bodies were evicted (a long-poll may have woken to find so).
    auto loaded = co_await load(conn, res.load_job);
    if (!loaded) co_return std::nullopt;
    std::string applied = std::move(res.preference_applied);
    res = respond(req, &*loaded);
    // A long-poll has had its wait; a request for an evicted job that turns
    // out unchanged after all gets its 304 now.
    res.wait = std::chrono::seconds(0);
    res.wait_key.clear();
    res.preference_applied = std::move(applied);
  }
  if (!res.job_uuid.empty()) {
    catalog_.touch(res.job_uuid);
    report_cache();
  }
  co_return res;
}

// Parks the request until the job's bodies are read back from the store,
// starting that read unless one is under way. Nothing (and the request
// dropped at once) when the client closes the connection meanwhile, as for a
// held long-poll; the read goes on for the others, and into the catalog.
net::awaitable<std::optional<loaded_job>> server::impl::load(connection& conn,
                                                             std::string job_uuid) {
  std::shared_ptr<body_load>& slot = loads_[job_uuid];
  if (!slot) {
    slot = std::make_shared<body_load>();
    start_load(job_uuid, slot);
  }
  const std::shared_ptr<body_load> load = slot;
  net::steady_timer timer(ctx_);
  const auto entry = load->parked.insert(load->parked.end(), &timer);
  metrics::body_load_waiters.inc();
  auto watch = std::make_shared<peer_watch>();
  watch->timer = &timer;
  watch_peer(conn.stream.socket(), watch);
  while (!load->result && !watch->gone) {
    timer.expires_at(steady_clock::time_point::max());
    co_await timer.async_wait(use_tuple);
  }
  watch->timer = nullptr;
  error_code ignored;
  conn.stream.socket().cancel(ignored);  // ends the watch if still pending
  load->parked.erase(entry);
  metrics::body_load_waiters.dec();
  if (watch->gone) co_return std::nullopt;
  co_return *load->result;
}

response server::impl::respond(const http::request<http::string_body>& req,
                               const loaded_job* loaded) {
  try {
    request view;
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
    return handle(view, catalog_, ready_.load(std::memory_order_relaxed), opts_, loaded);
  } catch (const std::exception& e) {
    log::error("cannot answer ", req.method_string(), " ", req.target(), ": ", e.what());
    return internal_error_response();
  }
}

void server::impl::finish(response& res, const http::request<http::string_body>& req) {
  add_cors(res, header_value(req, http::field::origin), opts_);
}

void server::impl::count(const response& res, steady_clock::time_point started) {
  // An event stream's duration is its whole life, not a request's latency.
  count(res.route, res.status, started, /*timed=*/!res.events);
}

void server::impl::count(route_id route, unsigned status, steady_clock::time_point started,
                         bool timed) {
  ++requests_[{route_label(route), status}];
  if (timed) {
    metrics::http_request_duration.observe(
        std::chrono::duration<double>(steady_clock::now() - started).count());
  }
}

// Holds a 304 that asked to wait ("Prefer: wait=N"), answering as soon as the
// body it names changes, or with the 304 once the wait is over. Nothing (and
// the slot back at once) when the client closes the connection meanwhile.
net::awaitable<std::optional<response>> server::impl::hold(
    connection& conn, const http::request<http::string_body>& req, response res) {
  if (waiters_.size() >= opts_.max_waiters) {
    response busy = error_response(503, "Too many requests are waiting for changes; try again.");
    busy.route = res.route;
    busy.retry_after = busy_retry_after;
    co_return busy;
  }
  const std::chrono::seconds wait = res.wait;
  const auto deadline = steady_clock::now() + wait;
  net::steady_timer timer(ctx_);
  const auto entry = waiters_.emplace(res.wait_key, &timer);
  metrics::long_poll_waiters.inc();
  auto watch = std::make_shared<peer_watch>();
  watch->timer = &timer;
  watch_peer(conn.stream.socket(), watch);
  while (!stopping_) {
    timer.expires_at(deadline);
    auto [ec] = co_await timer.async_wait(use_tuple);
    if (watch->gone) break;
    // Woken (cancelled) by a change to the body, by stop(), or the wait is
    // over: either way the answer is whatever the body is now.
    response next = respond(req);
    const bool over = !ec || stopping_;
    if (next.status != 304 || over) {
      res = std::move(next);
      break;
    }
  }
  watch->timer = nullptr;
  error_code ignored;
  conn.stream.socket().cancel(ignored);  // ends the watch if still pending
  waiters_.erase(entry);
  metrics::long_poll_waiters.dec();
  if (watch->gone) co_return std::nullopt;
  res.wait = std::chrono::seconds(0);
  res.wait_key.clear();
  res.preference_applied = "wait=" + std::to_string(wait.count());
  co_return res;
}

net::awaitable<void> server::impl::stream_events(std::shared_ptr<impl> self,
                                                 std::shared_ptr<connection> conn, response res,
                                                 unsigned version) {
  const options& opts = self->opts_;
  const bool chunked = version >= 11;
  subscriber sub(conn->stream.get_executor());
  sub.conn = conn.get();
  sub.job = res.events_job;
  self->subscribers_.push_back(&sub);
  const auto entry = std::prev(self->subscribers_.end());
  metrics::event_subscribers.inc();

  http::response<http::empty_body> msg{http::status::ok, version};
  msg.set(http::field::server, "ckptd");
  msg.set(http::field::date, self->date());
  msg.set(http::field::content_type, "text/event-stream");
  msg.set(http::field::cache_control, "no-cache");
  // Tells nginx-style proxies not to hold events back in a buffer.
  msg.set("X-Accel-Buffering", "no");
  if (!res.vary.empty()) msg.set(http::field::vary, res.vary);
  for (const auto& [name, value] : res.cors) msg.set(name, value);
  if (chunked) {
    msg.chunked(true);
  } else {
    msg.keep_alive(false);  // HTTP/1.0: the stream ends when the connection does
  }
  http::response_serializer<http::empty_body> serializer(msg);
  conn->writing = true;
  conn->stream.expires_after(opts.write_timeout);
  auto [header_ec, header_n] =
      co_await http::async_write_header(conn->stream, serializer, use_tuple);
  conn->writing = false;

  bool ok = !header_ec;
  if (ok) ok = co_await self->replay(sub, res.last_event_id, chunked);
  if (ok && !res.last_event_id) {
    // Gives the client an id to come back with, even if no event comes first.
    append_sse_id(sub.queue, sub.cursor);
  }
  sub.live = true;
  while (ok && !sub.overflow && !self->stopping_) {
    if (!sub.queue.empty()) {
      ok = co_await self->flush(sub, chunked);
      continue;
    }
    sub.wake.expires_after(opts.heartbeat_interval);
    auto [ec] = co_await sub.wake.async_wait(use_tuple);
    if (!ec && sub.queue.empty()) sub.queue = sse_heartbeat;
  }
  self->subscribers_.erase(entry);
  metrics::event_subscribers.dec();
  if (ok && !sub.overflow && chunked) {
    // Stopping: end the chunked body properly, so the client sees a clean end.
    static constexpr std::string_view last_chunk = "0\r\n\r\n";
    conn->stream.expires_after(stream_goodbye_time);
    co_await net::async_write(conn->stream, net::buffer(last_chunk), use_tuple);
  }
  if (sub.overflow) {
    log::info("an event stream fell more than ", opts.max_subscriber_queue_bytes,
              " bytes behind; disconnected it");
  }
  error_code ignored;
  conn->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  conn->stream.close();
}

// Brings a new stream up to the present. A fresh stream (no Last-Event-ID)
// starts from the newest seq; one resuming after `last_event_id` gets the
// events since, from the ring when it still holds them, else from the store
// page by page (each written out before the next is read). Leaves sub.cursor
// at the newest seq covered, ready for deliver() to take over. False when the
// client went away or the server is stopping.
net::awaitable<bool> server::impl::replay(subscriber& sub,
                                          std::optional<std::uint64_t> last_event_id,
                                          bool chunked) {
  const store::index* log = opts_.event_store;
  if (!last_event_id) {
    std::uint64_t newest = ring_.last_seq();
    if (log != nullptr) {
      // After a restart the ring is empty until the next event: ask the store.
      const replay_page page = co_await net::co_spawn(
          pool_->get_executor(), read_replay_page(log, 0, false), net::use_awaitable);
      newest = std::max(page.last_seq, ring_.last_seq());
    }
    sub.cursor = newest;
    co_return !stopping_;
  }

  std::uint64_t after = *last_event_id;
  int store_reads_without_progress = 0;
  bool store_exhausted = false;
  for (;;) {
    if (stopping_) co_return false;
    // From the ring: it holds everything after `after`, or the store has
    // nothing newer and the ring continues right where it ends.
    if (ring_.covers(after) ||
        (store_exhausted && (ring_.size() == 0 || ring_.first_seq() <= after + 1))) {
      ring_.for_each_after(after, [&](const store::event& e) { queue_for(sub, e); });
      sub.cursor = std::max({sub.cursor, after, ring_.last_seq()});
      co_return true;
    }
    std::string_view reset_reason;
    std::uint64_t newest = ring_.last_seq();
    if (log == nullptr) {
      const bool ring_from_start =
          after == 0 && (ring_.size() > 0 ? ring_.first_seq() == 1 : ring_.last_seq() == 0);
      if (ring_from_start) {
        store_exhausted = true;
        continue;
      }
      reset_reason = "the events after last_event_id are no longer retained";
    } else if (store_exhausted && ++store_reads_without_progress > max_replay_gaps) {
      // Only events published but never stored can leave such a gap.
      reset_reason = "the events after last_event_id were not found in the event log";
    } else {
      const replay_page page = co_await net::co_spawn(
          pool_->get_executor(), read_replay_page(log, after, true), net::use_awaitable);
      if (stopping_) co_return false;
      newest = std::max(page.last_seq, ring_.last_seq());
      if (page.failed) {
        reset_reason = "the event log could not be read";
      } else if (after > page.last_seq) {
        reset_reason = "last_event_id is not from this index (it was rebuilt)";
      } else if (page.first_seq > after + 1 || (page.first_seq == 0 && after < page.last_seq)) {
        // (An empty log whose seqs went past `after`: a rebuilt index's,
        // which starts after the old one's.)
        reset_reason = "the events after last_event_id are no longer retained";
      } else {
        for (const store::event& e : page.events) queue_for(sub, e);
        if (!page.events.empty()) {
          after = page.events.back().seq;
          store_reads_without_progress = 0;
        }
        store_exhausted = page.events.size() < replay_page_events;
        if (!co_await flush(sub, chunked)) co_return false;
        continue;
      }
    }
    // The client must start over: it is told so, with the id to resume from.
    append_sse_reset(sub.queue, newest, *last_event_id, reset_reason);
    sub.cursor = newest;
    after = newest;
    store_exhausted = true;
    store_reads_without_progress = max_replay_gaps + 1;  // no more store reads
    if (ring_.covers(after) || ring_.size() == 0 || ring_.first_seq() <= after + 1) continue;
    co_return true;
  }
}

// Writes everything queued for the stream, as chunks.
net::awaitable<bool> server::impl::flush(subscriber& sub, bool chunked) {
  connection& conn = *sub.conn;
  while (!sub.queue.empty() && !sub.overflow) {
    std::string out;
    out.swap(sub.queue);
    std::string size_line;
    if (chunked) {
      char text[24];
      const int n = std::snprintf(text, sizeof text, "%zx\r\n", out.size());
      size_line.assign(text, static_cast<std::size_t>(n));
      out += "\r\n";
    }
    sub.in_flight = out.size();
    conn.writing = true;
    conn.stream.expires_after(opts_.write_timeout);
    const std::array<net::const_buffer, 2> buffers{net::buffer(size_line), net::buffer(out)};
    auto [ec, n] = co_await net::async_write(conn.stream, buffers, use_tuple);
    conn.writing = false;
    sub.in_flight = 0;
    if (ec) co_return false;
  }
  co_return !sub.overflow;
}

std::string server::impl::render_metrics() const {
  std::string out;
  metrics::append_header(out, "ckptd_http_requests_total",
                         "HTTP requests answered, by route and status code.", "counter");
  for (const auto& [key, value] : requests_) {
    std::string labels;
    metrics::append_label(labels, "route", key.first);
    metrics::append_label(labels, "code", std::to_string(key.second));
    metrics::append_sample(out, "ckptd_http_requests_total", labels, static_cast<double>(value));
  }
  metrics::render(out);
  return out;
}

net::awaitable<bool> server::impl::write(connection& conn, const response& res, unsigned version,
                                         bool keep_alive, std::chrono::milliseconds timeout) {
  const std::string head = serialize_head(res, version, keep_alive, date());
  const bool bodiless = res.status == 304 || res.status == 204;
  const bool with_body = res.send_body && !bodiless;
  // One gather write: the shared body is sent from where it is cached.
  const std::array<net::const_buffer, 3> buffers{
      net::buffer(head), with_body ? net::buffer(*res.body) : net::const_buffer(),
      with_body ? net::buffer(res.body_tail) : net::const_buffer()};
  co_return co_await send_all(conn, buffers, timeout);
}

// A 429 from pre-built bytes (see rate_limited_head): only Date and the two
// retry headers are formatted, and nothing of the request is looked at.
net::awaitable<bool> server::impl::write_rate_limited(connection& conn, unsigned version,
                                                      bool keep_alive, bool send_body,
                                                      std::chrono::nanoseconds wait) {
  static const std::shared_ptr<const std::string> body =
      rate_limited_response(std::chrono::nanoseconds::zero()).body;
  const std::chrono::nanoseconds retry = wait > std::chrono::nanoseconds::zero() ? wait : 1ns;
  std::array<char, 128> varying{};
  const int n = std::snprintf(varying.data(), varying.size(),
                              "Date: %s\r\nRetry-After: %lld\r\nretry-after-ms: %lld\r\n\r\n",
                              date().c_str(), static_cast<long long>(retry_after_seconds(retry)),
                              static_cast<long long>(retry_after_milliseconds(retry)));
  const std::array<net::const_buffer, 3> buffers{
      net::buffer(rate_limited_head(version, keep_alive)),
      net::buffer(varying.data(), static_cast<std::size_t>(n)),
      send_body ? net::buffer(*body) : net::const_buffer()};
  co_return co_await send_all(conn, buffers, opts_.write_timeout);
}

// Unread input is read into `scratch` and dropped.
net::awaitable<void> server::impl::linger_and_close(connection& conn, net::mutable_buffer scratch) {
  error_code ignored;
  conn.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  conn.stream.expires_after(linger_time);
  std::size_t drained = 0;
  while (drained < linger_bytes) {
    auto [ec, n] = co_await conn.stream.async_read_some(scratch, use_tuple);
    if (ec) break;
    drained += n;
  }
  conn.stream.close();
}

const std::string& server::impl::date() {
  const std::time_t now = std::time(nullptr);
  if (now != date_time_) {
    date_time_ = now;
    date_text_ = http_date(now);
  }
  return date_text_;
}

server::server(boost::asio::io_context& ctx, options opts)
    : impl_(std::make_shared<impl>(ctx, std::move(opts))) {}

server::~server() {
  if (!impl_) return;
  impl_->stop();
  // The sessions may outlive this object until the io_context drops them,
  // and the impl with them; the pool must not post to a dead io_context.
  impl_->join_pool();
}

void server::start() { impl_->start(); }

std::uint16_t server::port() const { return impl_->port_; }

void server::stop() { impl_->stop(); }

std::size_t server::open_connections() const {
  return impl_->open_.load(std::memory_order_relaxed);
}

void server::reconfigure(const options& opts) {
  // Applied at once when called on the io_context's thread (as from a signal
  // handler there), else as soon as that thread gets to it.
  net::dispatch(impl_->ctx_, [self = impl_, opts] { self->reconfigure(opts); });
}

void server::publish(const std::string& job_uuid, std::vector<store::checkpoint> checkpoints,
                     job_status status) {
  // Serialized here, on the caller's thread; the io_context only swaps
  // pointers and wakes the long-polls on this job. The status body shares the
  // artifacts body's checkpoints; gzip waits for a client that asks for it.
  cached_job bodies = make_cached_job(job_uuid, std::move(checkpoints), status);
  net::post(impl_->ctx_, [self = impl_, uuid = job_uuid, bodies = std::move(bodies)]() mutable {
    self->put(uuid, std::move(bodies.artifacts), std::move(bodies.status));
  });
}

void server::forget(const std::string& job_uuid) {
  net::post(impl_->ctx_, [self = impl_, uuid = job_uuid] { self->erase(uuid); });
}

void server::publish_events(std::vector<store::event> events) {
  if (events.empty()) return;
  net::post(impl_->ctx_, [self = impl_, events = std::move(events)]() mutable {
    self->deliver(std::move(events));
  });
}

void server::set_ready(bool ready) { impl_->ready_.store(ready, std::memory_order_relaxed); }

}  // namespace ckptd::api
