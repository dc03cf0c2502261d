// The I/O shell of ckptd::api: accept connections, parse HTTP/1.1, enforce
// the per-connection limits, and write what router.cpp decides.
//
// One coroutine per connection reads a request, answers it and reads the
// next, so pipelined requests are answered in order and at most one request
// per connection is in flight. Everything runs on the io_context's thread;
// other threads only post to it.

#include <ckptd/api.hpp>
#include <ckptd/log.hpp>

#include "artifacts_json.hpp"
#include "catalog.hpp"
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
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <exception>
#include <limits>
#include <list>
#include <string>
#include <system_error>
#include <utility>

namespace ckptd::api {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

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
// Connections turned away with 503 at once; beyond this they are just closed.
constexpr std::size_t max_rejecting = 64;
// Pause after an accept failure such as EMFILE, so the loop does not spin.
constexpr auto accept_retry_delay = std::chrono::milliseconds(100);
// Accept failures are logged at most once per this interval.
constexpr auto accept_log_interval = std::chrono::seconds(10);

struct connection {
  explicit connection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
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

}  // namespace

class server::impl : public std::enable_shared_from_this<impl> {
 public:
  impl(net::io_context& ctx, options opts)
      : ctx_(ctx),
        opts_(std::move(opts)),
        limiter_({opts_.rate_limit, opts_.rate_burst}, opts_.rate_clients) {}

  void start();
  void stop();
  void reconfigure(const options& opts);

  void put(const std::string& job_uuid, std::shared_ptr<const cached_body> artifacts,
           std::shared_ptr<const cached_body> status) {
    catalog_.put(job_uuid, std::move(artifacts), std::move(status));
    // Long-poll and SSE waiters on this job will be woken here.
  }
  void erase(const std::string& job_uuid) { catalog_.erase(job_uuid); }

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
    }
    ~registration() {
      owner_.live_.erase(it_);
      --counter_;
      owner_.open_.fetch_sub(1, std::memory_order_relaxed);
    }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;

   private:
    impl& owner_;
    std::list<connection*>::iterator it_;
    std::size_t& counter_;
  };

  static net::awaitable<void> accept_loop(std::shared_ptr<impl> self,
                                         std::shared_ptr<tcp::acceptor> acceptor);
  void listen_on_address();
  void adopt(int fd);
  static net::awaitable<void> serve(std::shared_ptr<impl> self, std::shared_ptr<connection> conn,
                                    std::string client);
  static net::awaitable<void> reject(std::shared_ptr<impl> self, std::shared_ptr<connection> conn);

  // These two are awaited at once by serve() or reject(), whose frames own
  // the connection and buffer they are given.
  net::awaitable<bool> write(connection& conn, const response& res, unsigned version,
                             bool keep_alive, std::chrono::milliseconds timeout);
  static net::awaitable<void> linger_and_close(connection& conn, beast::flat_buffer& buffer);

  response respond(const http::request<http::string_body>& req);
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
}

void server::impl::reconfigure(const options& opts) {
  // The listening sockets stay as they are.
  options next = opts;
  next.listen_host = opts_.listen_host;
  next.listen_port = opts_.listen_port;
  next.listen_fds = opts_.listen_fds;
  opts_ = std::move(next);
  limiter_.reconfigure({opts_.rate_limit, opts_.rate_burst}, opts_.rate_clients);
}

net::awaitable<void> server::impl::accept_loop(std::shared_ptr<impl> self,
                                               std::shared_ptr<tcp::acceptor> acceptor) {
  auto last_log = std::chrono::steady_clock::time_point::min();
  for (;;) {
    auto [ec, socket] = co_await acceptor->async_accept(use_tuple);
    if (self->stopping_ || !acceptor->is_open()) co_return;
    if (ec) {
      // EMFILE and friends: the pending connection stays queued; wait a bit
      // rather than spinning on the same failure.
      const auto now = std::chrono::steady_clock::now();
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
      if (self->rejecting_ >= max_rejecting) continue;  // closed as conn goes
      ++self->rejecting_;
      net::co_spawn(self->ctx_, reject(self, std::move(conn)), log_exception);
      continue;
    }
    ++self->connections_;
    net::co_spawn(self->ctx_, serve(self, std::move(conn), client_key(peer)), log_exception);
  }
}

net::awaitable<void> server::impl::reject(std::shared_ptr<impl> self,
                                          std::shared_ptr<connection> conn) {
  registration reg(*self, conn.get(), self->rejecting_);
  response res = error_response(503, "ckptd has too many open connections; try again later.");
  res.retry_after = std::chrono::seconds(1);
  beast::flat_buffer buffer;
  const auto timeout =
      std::min<std::chrono::milliseconds>(self->opts_.write_timeout, std::chrono::seconds(5));
  if (co_await self->write(*conn, res, 11, /*keep_alive=*/false, timeout)) {
    co_await linger_and_close(*conn, buffer);
  }
}

net::awaitable<void> server::impl::serve(std::shared_ptr<impl> self,
                                         std::shared_ptr<connection> conn, std::string client) {
  registration reg(*self, conn.get(), self->connections_);
  const options& opts = self->opts_;
  beast::flat_buffer buffer;
  bool first = true;
  for (;;) {
    if (self->stopping_) break;
    // Wait for the next request's first byte under the idle timeout (the read
    // timeout for a new connection); pipelined input is already buffered.
    if (buffer.size() == 0) {
      conn->stream.expires_after(first ? opts.read_timeout : opts.idle_timeout);
      auto [ec, n] =
          co_await conn->stream.async_read_some(buffer.prepare(idle_read_bytes), use_tuple);
      if (ec) co_return;  // closed by the peer, idle too long, or stop()
      buffer.commit(n);
      if (self->stopping_) break;
    }
    first = false;

    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(opts.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser.body_limit(opts.max_body_bytes);
    conn->stream.expires_after(opts.read_timeout);
    auto [header_ec, header_n] =
        co_await http::async_read_header(conn->stream, buffer, parser, use_tuple);
    if (header_ec) {
      if (!is_protocol_error(header_ec)) co_return;
      const response res = error_response(status_for_parse_error(header_ec),
                                          detail_for_parse_error(header_ec, opts));
      if (co_await self->write(*conn, res, 11, /*keep_alive=*/false, opts.write_timeout)) {
        co_await linger_and_close(*conn, buffer);
      }
      co_return;
    }
    const auto& req = parser.get();
    const unsigned version = req.version();
    const bool head = req.method() == http::verb::head;

    // The rate limit comes before any other work on the request.
    if (self->limiter_.enabled()) {
      const auto verdict = self->limiter_.take(client, std::chrono::steady_clock::now());
      if (!verdict.allowed) {
        // An unread body would be taken for the next request: close instead.
        const bool keep_alive = req.keep_alive() && parser.is_done() && !self->stopping_;
        response res = rate_limited_response(verdict.wait);
        res.send_body = !head;
        if (!co_await self->write(*conn, res, version, keep_alive, opts.write_timeout)) co_return;
        if (!keep_alive) break;
        continue;
      }
    }

    if (req.target().size() > opts.max_target_bytes) {
      response res = error_response(414, "The request target is longer than " +
                                             std::to_string(opts.max_target_bytes) + " bytes.");
      res.send_body = !head;
      if (co_await self->write(*conn, res, version, /*keep_alive=*/false, opts.write_timeout)) {
        co_await linger_and_close(*conn, buffer);
      }
      co_return;
    }

    if (!parser.is_done()) {
      auto [body_ec, body_n] = co_await http::async_read(conn->stream, buffer, parser, use_tuple);
      if (body_ec) {
        if (!is_protocol_error(body_ec)) co_return;
        response res =
            error_response(status_for_parse_error(body_ec), detail_for_parse_error(body_ec, opts));
        res.send_body = !head;
        if (co_await self->write(*conn, res, version, /*keep_alive=*/false, opts.write_timeout)) {
          co_await linger_and_close(*conn, buffer);
        }
        co_return;
      }
    }

    const response res = self->respond(parser.get());
    const bool keep_alive = parser.get().keep_alive() && !self->stopping_;
    if (!co_await self->write(*conn, res, version, keep_alive, opts.write_timeout)) co_return;
    if (!keep_alive) break;
  }
  co_await linger_and_close(*conn, buffer);
}

response server::impl::respond(const http::request<http::string_body>& req) {
  try {
    request view;
    view.method = req.method_string();
    view.target = req.target();
    if (const auto it = req.find(http::field::if_none_match); it != req.end()) {
      view.if_none_match = it->value();
    }
    return handle(view, catalog_, ready_.load(std::memory_order_relaxed));
  } catch (const std::exception& e) {
    log::error("cannot answer ", req.method_string(), " ", req.target(), ": ", e.what());
    return internal_error_response();
  }
}

net::awaitable<bool> server::impl::write(connection& conn, const response& res, unsigned version,
                                         bool keep_alive, std::chrono::milliseconds timeout) {
  http::response<http::buffer_body> msg{static_cast<http::status>(res.status), version};
  msg.set(http::field::server, "ckptd");
  msg.set(http::field::date, date());
  if (res.status != 304) msg.set(http::field::content_type, res.content_type);
  if (!res.etag.empty()) msg.set(http::field::etag, res.etag);
  if (!res.cache_control.empty()) msg.set(http::field::cache_control, res.cache_control);
  if (!res.allow.empty()) msg.set(http::field::allow, res.allow);
  if (res.retry_after > std::chrono::nanoseconds::zero()) {
    msg.set(http::field::retry_after, std::to_string(retry_after_seconds(res.retry_after)));
    msg.set("retry-after-ms", std::to_string(retry_after_milliseconds(res.retry_after)));
  }
  msg.keep_alive(keep_alive);
  // A 304 has no body and no length of its own; HEAD announces the GET's length.
  if (res.status != 304) msg.content_length(res.body->size());
  if (res.send_body && res.status != 304 && !res.body->empty()) {
    // buffer_body only reads through this pointer; the shared body outlives the write.
    msg.body().data = const_cast<char*>(res.body->data());
    msg.body().size = res.body->size();
  } else {
    msg.body().data = nullptr;
    msg.body().size = 0;
  }
  msg.body().more = false;

  conn.writing = true;
  conn.stream.expires_after(timeout);
  auto [ec, n] = co_await http::async_write(conn.stream, msg, use_tuple);
  conn.writing = false;
  co_return !ec;
}

net::awaitable<void> server::impl::linger_and_close(connection& conn, beast::flat_buffer& buffer) {
  error_code ignored;
  conn.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  conn.stream.expires_after(linger_time);
  std::size_t drained = 0;
  while (drained < linger_bytes) {
    buffer.clear();
    auto [ec, n] = co_await conn.stream.async_read_some(buffer.prepare(idle_read_bytes), use_tuple);
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
  if (impl_) impl_->stop();
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
  // Serialized (and compressed) here, on the caller's thread; the io_context
  // only swaps pointers.
  job_bodies bodies = job_json(job_uuid, std::move(checkpoints), status);
  auto artifacts = make_cached_body(std::move(bodies.artifacts));
  auto status_body = make_cached_body(std::move(bodies.status));
  net::post(impl_->ctx_, [self = impl_, uuid = job_uuid, artifacts = std::move(artifacts),
                          status_body = std::move(status_body)]() mutable {
    self->put(uuid, std::move(artifacts), std::move(status_body));
  });
}

void server::forget(const std::string& job_uuid) {
  net::post(impl_->ctx_, [self = impl_, uuid = job_uuid] { self->erase(uuid); });
}

void server::publish_events(std::vector<store::event> events) { (void)events; }

void server::set_ready(bool ready) { impl_->ready_.store(ready, std::memory_order_relaxed); }

}  // namespace ckptd::api
