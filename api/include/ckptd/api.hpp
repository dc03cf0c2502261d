#pragma once
// ckptd::api — the HTTP side: llama-stack's post-training read routes, served
// from in-memory bodies that are rebuilt only when a job changes.
//
// Requests never touch the disk or RocksDB: `publish` serializes a job's
// artifacts body on the caller's thread and hands the finished bytes to the
// server's io_context. Each client address has a token bucket; an empty one
// gets 429 before any other work is done.
//
// Thread-safety: construct, start and stop on the io_context's thread.
// publish, forget and set_ready may be called from any thread.

#include <ckptd/store.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace ckptd::api {

struct options {
  // Address and port to listen on. Default: 127.0.0.1:8321 (the llama-stack
  // client's default port). Port 0 picks a free port (see server::port()).
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8321;
  // Sustained requests per second per client address. 0 disables limiting.
  // Default: 20.
  double rate_limit = 20;
  // Requests a client may send at once before the rate applies. Default: 40.
  double rate_burst = 40;
  // Most client addresses tracked by the rate limiter; idle ones are evicted
  // first. Default: 10000.
  std::size_t rate_clients = 10000;
  // Longest request target accepted (414 beyond). Default: 8 KiB.
  std::size_t max_target_bytes = 8 * 1024;
  // Largest request header accepted (431 beyond). Default: 16 KiB.
  std::size_t max_header_bytes = 16 * 1024;
  // Largest request body accepted (413 beyond). Default: 64 KiB.
  std::size_t max_body_bytes = 64 * 1024;
  // Time allowed to receive one whole request. Default: 10 s.
  std::chrono::milliseconds read_timeout{10000};
  // Time an idle keep-alive connection is kept open. Default: 60 s.
  std::chrono::milliseconds idle_timeout{60000};
  // Time allowed to write one response to a slow reader. Default: 30 s.
  std::chrono::milliseconds write_timeout{30000};
  // Most connections open at once (503 beyond). Default: 4096.
  std::size_t max_connections = 4096;
};

class server {
 public:
  server(boost::asio::io_context& ctx, options opts);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds and starts accepting. Throws std::system_error when the address
  // cannot be bound.
  void start();
  // The port actually bound (useful with port 0). Valid after start().
  [[nodiscard]] std::uint16_t port() const;
  // Stops accepting and closes every connection once its response is out.
  void stop();

  // The job's current checkpoints (any order); the job becomes known.
  void publish(const std::string& job_uuid, std::vector<store::checkpoint> checkpoints);
  // The job is gone: its routes answer 404 from now on.
  void forget(const std::string& job_uuid);
  // /readyz answers 200 once ready, 503 before.
  void set_ready(bool ready);

 private:
  class impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace ckptd::api
