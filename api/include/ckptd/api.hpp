#pragma once
// ckptd::api — the HTTP side: llama-stack's post-training read routes, served
// from in-memory bodies that are rebuilt only when a job changes, plus
// ckptd's own routes for dashboards (long-poll, Server-Sent Events, metrics).
//
// Requests never touch the disk on the HTTP thread: `publish` serializes a
// job's bodies on the caller's thread and hands the finished bytes to the
// server's io_context, which wakes the long-polls waiting on that job (a
// body's gzip encoding is made there, on the first request that accepts it).
// With an event_store, only the most recently used jobs keep their bodies,
// within options::body_cache_bytes; every job keeps its ETags, so 304s and
// long-polls never wait. A request that needs an evicted body waits, without
// a thread, while one read of the job from the store rebuilds it on a thread
// of the server's own. Push events go the same way through `publish_events`;
// only a client reconnecting from further back than the in-memory ring
// reaches RocksDB, on that same thread. Each client address has a token
// bucket; an empty one gets 429 before any other work is done. Routes,
// headers and limits are listed in src/router.hpp.
//
// Thread-safety: construct, start and stop on the io_context's thread.
// Everything else may be called from any thread.

#include <ckptd/store.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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
  // Sustained requests per second per client address (an IPv6 /64 counts as
  // one address). 0 disables limiting. /healthz and /readyz are never
  // limited, so probes never see 429. Default: 20.
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
  // Time allowed to receive one whole request, from its first byte; a request
  // still incomplete then gets 408 and the connection is closed (a new
  // connection that sends nothing in this time is closed silently).
  // Default: 10 s.
  std::chrono::milliseconds read_timeout{10000};
  // Time an idle keep-alive connection is kept open. Default: 60 s.
  std::chrono::milliseconds idle_timeout{60000};
  // Time allowed to write one response to a slow reader. Default: 30 s.
  std::chrono::milliseconds write_timeout{30000};
  // Most connections open at once (503 beyond). Default: 4096.
  std::size_t max_connections = 4096;
  // Listening sockets handed over by systemd (socket activation). When not
  // empty they are served and listen_host/listen_port are not bound.
  // Default: none.
  std::vector<int> listen_fds;
  // Bearer tokens; when not empty every route but /healthz and /readyz needs
  // "Authorization: Bearer <token>" (compared in constant time). Default: none.
  std::vector<std::string> auth_tokens;
  // Origins allowed by CORS ("https://dash.example"; "*" for any). Default: none.
  std::vector<std::string> cors_origins;

  // Requests held at once by "Prefer: wait=N" long-polls; beyond it such a
  // request gets 503 with Retry-After: 1 at once (a 304 would invite an
  // immediate re-poll). A held request whose client closes the connection
  // gives its place back at once. Default: 1024.
  std::size_t max_waiters = 1024;
  // Longest wait a "Prefer: wait=N" long-poll gets (larger N are cut to it).
  // Default: 300 s.
  std::chrono::seconds max_wait{300};
  // Event streams (GET /v1/ckptd/events) open at once; beyond it 503.
  // Default: 256.
  std::size_t max_subscribers = 256;
  // Event bytes queued for one stream that its client has not read yet; a
  // client that falls further behind is disconnected (it reconnects with
  // Last-Event-ID and misses nothing). Default: 1 MiB.
  std::size_t max_subscriber_queue_bytes = 1024 * 1024;
  // A stream with nothing to send gets a ": ping" comment this often, so
  // proxies and clients can tell it is alive. Default: 15 s.
  std::chrono::milliseconds heartbeat_interval{15000};
  // Most recent events kept in memory to replay to reconnecting clients
  // without reading the store (about 450 bytes each; one further back is
  // read from the store off the HTTP thread). Default: 1024.
  std::size_t recent_events = 1024;
  // The event log, read only to replay history to a client reconnecting from
  // further back than the in-memory events (off the HTTP thread). Not owned;
  // must outlive the server. nullptr: such a client gets an "event: reset".
  // Also where evicted job bodies are rebuilt from (see body_cache_bytes).
  // Default: nullptr.
  const store::index* event_store = nullptr;
  // Bytes of job bodies (artifacts and status, gzip encodings included) kept
  // in memory; the least recently requested or published jobs lose theirs
  // first, keeping only their ETags. A request that needs an evicted body is
  // answered once the job has been read back from event_store (the bodies are
  // byte for byte what publish() made of the same checkpoints). 0 keeps every
  // body. Only with an event_store; without one every body is kept.
  // Default: 2 MiB (about 70 jobs of 100 checkpoints, or a 1,000-checkpoint
  // job's bodies several times over).
  std::size_t body_cache_bytes = 2 * 1024 * 1024;
};

// A job's status as llama-stack's PostTrainingJobStatusResponse reports it;
// the watcher infers it from the job folder (rules in the README).
struct job_status {
  std::string status = "scheduled";  // scheduled, in_progress, completed, failed, cancelled
  std::optional<std::int64_t> started_at_ns;
  std::optional<std::int64_t> completed_at_ns;
  friend bool operator==(const job_status&, const job_status&) = default;
};

// The status the API reports for a job record of the store: its status word
// ("scheduled" when not yet judged) and its times when known (not 0).
[[nodiscard]] job_status status_of(const store::job& record);

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
  // Connections still open (after stop(): those still finishing), event
  // streams and held long-polls included.
  [[nodiscard]] std::size_t open_connections() const;
  // Applies changed options to the running server without dropping
  // connections: rate limits (each client's bucket keeps its share of a full
  // bucket), auth tokens, CORS origins, limits, timeouts, bounds and the body
  // cache's budget. The
  // listening sockets and event_store are not changed. Applied before
  // returning when called on the io_context's thread, else shortly after.
  void reconfigure(const options& opts);

  // The job's current checkpoints (any order) and status; the job becomes
  // known, and its bodies the most recently used. With an event_store they
  // must be what the store holds for the job (as the store's own records
  // read back give), since an evicted body is rebuilt from there.
  void publish(const std::string& job_uuid, std::vector<store::checkpoint> checkpoints,
               job_status status = {});
  // The job is gone: its routes answer 404 from now on.
  void forget(const std::string& job_uuid);
  // Events just written to the store (seq ascending, continuing the seqs
  // passed before), for the open event streams and the in-memory ring.
  void publish_events(std::vector<store::event> events);
  // /readyz answers 200 once ready, 503 before.
  void set_ready(bool ready);

 private:
  class impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace ckptd::api
