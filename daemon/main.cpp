// ckptd: wiring. The store is opened first (a refused index stops everything
// before a port is bound), the API serves what the index already holds, and
// the watcher reconciles the index with the disk on a thread of its own;
// /readyz turns 200 and systemd hears READY=1 once that first reconcile is
// done. SIGHUP re-reads the configuration; SIGTERM and SIGINT stop cleanly.

#include "demo.hpp"
#include "options.hpp"
#include "service.hpp"

#include <ckptd/api.hpp>
#include <ckptd/log.hpp>
#include <ckptd/metrics.hpp>
#include <ckptd/store.hpp>
#include <ckptd/watcher.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include <malloc.h>
#include <sys/resource.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <utility>

#include <csignal>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <thread>

namespace net = boost::asio;
using namespace ckptd;
namespace service = ckptd::daemon::service;

namespace {

// In-flight requests get this long to finish after SIGTERM.
constexpr auto shutdown_grace = std::chrono::seconds(4);
// systemd's STATUS= line is refreshed at most this often.
constexpr auto status_interval = std::chrono::seconds(1);

api::options api_options(const daemon::settings& s, std::vector<int> sockets,
                         const store::index* event_store) {
  api::options o;
  o.listen_host = s.listen_host;
  o.listen_port = s.listen_port;
  o.listen_fds = std::move(sockets);
  o.rate_limit = s.rate_limit;
  o.rate_burst = s.rate_burst;
  o.auth_tokens = s.auth_tokens;
  o.cors_origins = s.cors_origins;
  o.max_connections = s.max_connections;
  o.rate_clients = s.rate_clients;
  o.body_cache_bytes = s.body_cache_bytes;
  o.event_store = event_store;
  return o;
}

watcher::options watcher_options(const daemon::settings& s) {
  watcher::options o;
  o.roots = s.watch;
  o.jobs = s.jobs;
  o.mode = s.watch_mode;
  o.poll_interval = s.poll_interval;
  o.max_depth = s.max_depth;
  o.settle_time = s.settle_time;
  o.rescan_interval = s.rescan_interval;
  return o;
}

std::string clock_time_now() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char text[16];
  std::strftime(text, sizeof text, "%H:%M:%S", &tm);
  return text;
}

// Keeps the API's copy of each job equal to the index, and systemd's STATUS=
// line current, on a thread of its own: re-reading and serializing a job is a
// quarter of the watcher's work when it indexes a large tree, and the watcher
// need not wait for it. Jobs changed while the publisher is busy are
// published once, however often they changed meanwhile.
class publisher {
 public:
  publisher(store::index& index, api::server& server, net::io_context& ctx)
      : index_(index), server_(server), ctx_(ctx), last_event_seq_(index.last_event_seq()) {}

  // The job changed in the index: publish it soon. Any thread.
  void job_changed(const std::string& uuid) {
    const std::lock_guard lock(mutex_);
    changed_.insert(uuid);
    if (std::exchange(publishing_, true)) return;
    net::post(ctx_, [this] { publish_changed(); });
  }

  // Runs `f` on the publisher's thread once every job changed before has
  // been published. Any thread.
  void after_changes(std::function<void()> f) { net::post(ctx_, std::move(f)); }

  // The jobs changed so far, then the events written with them: a client
  // reading a job after an event finds the job as new as the event.
  void publish_changed() {
    std::set<std::string> changed;
    {
      const std::lock_guard lock(mutex_);
      changed.swap(changed_);
      publishing_ = false;
    }
    for (const auto& uuid : changed) publish_job(uuid);
    publish_new_events();
    if (!changed.empty()) last_event_ = "job " + *changed.rbegin() + " changed at " + clock_time_now();
    report_status(/*force=*/false);
  }

  // Re-reads one job from the index (one prefix scan) and hands it to the API.
  void publish_job(const std::string& uuid) {
    auto job = index_.find_job(uuid);
    if (!job) {
      log::error("cannot read job ", uuid, " from the index: ", job.error().message());
      return;
    }
    if (!*job) {
      server_.forget(uuid);
      counts_.erase(uuid);
    } else {
      auto checkpoints = index_.checkpoints(uuid);
      if (!checkpoints) {
        log::error("cannot read checkpoints of job ", uuid, ": ", checkpoints.error().message());
        return;
      }
      counts_[uuid] = checkpoints->size();
      server_.publish(uuid, std::move(*checkpoints), api::status_of(**job));
    }
  }

  // Hands the events written since the last call to the API's subscribers,
  // in sequence order: one range scan of the index's event log.
  void publish_new_events() {
    for (;;) {
      auto events = index_.events_after(last_event_seq_, events_per_read);
      if (!events) {
        log::error("cannot read the event log: ", events.error().message());
        return;
      }
      if (events->empty()) return;
      last_event_seq_ = events->back().seq;
      const bool more = events->size() == events_per_read;
      server_.publish_events(std::move(*events));
      if (!more) return;
    }
  }

  void report_status(bool force) {
    auto now = std::chrono::steady_clock::now();
    if (!force && now - last_status_ < status_interval) return;
    last_status_ = now;
    std::size_t checkpoints = 0;
    for (auto& [uuid, n] : counts_) checkpoints += n;
    metrics::checkpoints_indexed.set(static_cast<double>(checkpoints));
    metrics::jobs_indexed.set(static_cast<double>(counts_.size()));
    service::notify("STATUS=" + std::to_string(counts_.size()) + " jobs, " +
                    std::to_string(checkpoints) + " checkpoints" +
                    (last_event_.empty() ? "" : "; last: " + last_event_));
  }

 private:
  store::index& index_;
  api::server& server_;
  net::io_context& ctx_;
  std::mutex mutex_;
  std::set<std::string> changed_;  // under mutex_
  bool publishing_ = false;        // under mutex_: publish_changed is posted
  std::map<std::string, std::size_t> counts_;
  std::uint64_t last_event_seq_;
  static constexpr std::size_t events_per_read = 1024;
  std::string last_event_;
  std::chrono::steady_clock::time_point last_status_{};
};

// Where a rebuilt index's event seqs start: the wall clock in microseconds.
// An index counts its seqs from 1 (or, rebuilt, from the time it was made)
// and gives out far fewer than one per microsecond of its life, so the old
// index's are all below, and clients resuming with one get a reset rather
// than a resume in the new numbering. (A clock set back by longer than the
// old index lived would defeat this.) It stays below 2^53, which JavaScript
// clients read exactly, until the year 2255.
std::uint64_t start_of_rebuilt_event_log() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return static_cast<std::uint64_t>(
      std::max<std::int64_t>(1, std::chrono::duration_cast<std::chrono::microseconds>(now).count()));
}

// Each connection is a file descriptor: take every one the hard limit allows.
void raise_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const auto soft = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0)
    log::info("raised the open file limit from ", soft, " to ", limit.rlim_max);
}

int run(daemon::settings s, int argc, char** argv) {
  raise_file_limit();
  std::unique_ptr<daemon::demo_trainer> demo;
  if (s.demo_dir) {
    const std::filesystem::path dir = std::filesystem::absolute(*s.demo_dir);
    std::filesystem::create_directories(dir / "runs");
    s.watch.push_back({dir / "runs"});
    s.db = (dir / "db").string();
  }

  std::error_code ec;
  bool moved_aside = false;
  if (s.rebuild_index && std::filesystem::exists(s.db, ec)) {
    auto moved = store::index::move_aside(s.db);
    if (!moved) {
      log::error("cannot move the index ", s.db, " aside: ", moved.error().message());
      return 1;
    }
    moved_aside = true;
    log::notice("moved the index aside to ", moved->string(), "; rebuilding it from the disk");
  }
  std::filesystem::create_directories(s.db, ec);
  auto opened =
      store::index::open(s.db, [](std::string_view line) { log::warning("index: ", line); });
  if (!opened) {
    log::error("cannot open the index in ", s.db, ": ", opened.error().message());
    return 1;
  }
  store::index& index = **opened;
  if (moved_aside) {
    // Event ids go on past the old index's (see start_of_rebuilt_event_log).
    if (auto started = index.start_events_after(start_of_rebuilt_event_log()); !started) {
      log::error("cannot start the rebuilt index's event log: ", started.error().message());
      return 1;
    }
  }

  net::io_context http_ctx(1);
  net::io_context watch_ctx(1);

  api::server server(http_ctx, api_options(s, service::activated_sockets(), &index));
  try {
    server.start();
  } catch (const std::exception& e) {
    log::error("cannot listen on ", s.listen_host, ":", s.listen_port, ": ", e.what());
    return 1;
  }

  // Serve what the index holds while the watcher reconciles it with the disk.
  net::io_context publish_ctx(1);
  auto publish_work = net::make_work_guard(publish_ctx);
  publisher pub(index, server, publish_ctx);
  std::thread publish_thread([&] { publish_ctx.run(); });
  if (auto jobs = index.jobs()) {
    for (const auto& j : *jobs) pub.job_changed(j.uuid);
  } else {
    log::error("cannot read jobs from the index: ", jobs.error().message());
  }

  watcher::callbacks cb;
  cb.on_job_changed = [&](const std::string& uuid) { pub.job_changed(uuid); };
  // Touched on the publisher's thread only.
  bool reconciled = false;
  // /readyz follows the index's health: while writes fail (full volume) the
  // API keeps answering from what is indexed, but says it is not ready. Both
  // callbacks come from the watcher's thread, where every index write
  // happens, so readiness changes exactly when health does: no timer polls
  // it. They are passed on through the publisher, so that READY=1 and 200s
  // from /readyz come only once every job reconciled is published.
  cb.on_reconciled = [&] {
    pub.after_changes([&] {
      // The index's memtables are written out, which frees them (up to a
      // few MB after a large tree). The first scan's listings, reads and
      // decoded records are freed by now too, but glibc keeps the pages in
      // its arenas (one per thread that allocated): hand them all back.
      if (auto written = index.write_out(); !written) {
        log::warning("cannot write the index memtables out: ", written.error().message());
      }
      ::malloc_trim(0);
      reconciled = true;
      server.set_ready(index.healthy());
      pub.report_status(/*force=*/true);
      service::notify("READY=1");
    });
  };
  cb.on_index_health = [&](bool healthy) {
    pub.after_changes([&, healthy] { server.set_ready(reconciled && healthy); });
  };
  watcher::watcher watch(watch_ctx, watcher_options(s), index, cb);

  int exit_code = 0;
  auto watch_work = net::make_work_guard(watch_ctx);
  net::post(watch_ctx, [&] {
    try {
      watch.start();
    } catch (const std::exception& e) {
      log::error("cannot start watching: ", e.what());
      exit_code = 1;
      ::raise(SIGTERM);  // the one shutdown path: the signal handler below
    }
  });
  std::thread watch_thread([&] { watch_ctx.run(); });

  if (s.demo_dir) demo = std::make_unique<daemon::demo_trainer>(s.watch.back().path);

  // Watchdog: pinged from the HTTP loop, and only while the watcher's loop
  // shows it is turning too, so a stuck thread of either kind stops the pings.
  std::atomic<std::int64_t> watcher_heartbeat{0};
  auto steady_now = [] { return std::chrono::steady_clock::now().time_since_epoch().count(); };
  net::steady_timer watchdog_timer(http_ctx);
  net::steady_timer heartbeat_timer(watch_ctx);
  std::function<void()> ping, beat;
  if (auto interval = service::watchdog_interval()) {
    auto period = std::chrono::duration_cast<std::chrono::steady_clock::duration>(*interval / 2);
    beat = [&, period] {
      watcher_heartbeat = steady_now();
      heartbeat_timer.expires_after(period / 2);
      heartbeat_timer.async_wait([&](boost::system::error_code e) {
        if (!e) beat();
      });
    };
    ping = [&, period, interval] {
      if (steady_now() - watcher_heartbeat.load() <
          std::chrono::steady_clock::duration(*interval).count())
        service::notify("WATCHDOG=1");
      watchdog_timer.expires_after(period);
      watchdog_timer.async_wait([&](boost::system::error_code e) {
        if (!e) ping();
      });
    };
    net::post(watch_ctx, beat);
    watcher_heartbeat = steady_now();
    ping();
  }

  // SIGHUP: re-read the configuration; a bad one is refused, the old stays.
  net::signal_set hangup(http_ctx, SIGHUP);
  std::function<void()> on_hangup = [&] {
    hangup.async_wait([&](boost::system::error_code e, int) {
      if (e) return;
      service::notify("RELOADING=1");
      log::notice("SIGHUP: reloading the configuration");
      daemon::settings fresh;
      if (daemon::parse(argc, argv, fresh) != daemon::outcome::run) {
        log::error("the new configuration is invalid; keeping the old one");
      } else {
        if (fresh.demo_dir) fresh.watch = s.watch;
        if (fresh.listen_host != s.listen_host || fresh.listen_port != s.listen_port ||
            (!fresh.demo_dir && fresh.db != s.db))
          log::warning("listen and db changes take effect at the next restart");
        log::set_threshold(fresh.log_level);
        server.reconfigure(api_options(fresh, {}, &index));
        net::post(watch_ctx, [&watch, o = watcher_options(fresh)] { watch.reconfigure(o); });
        s = fresh;
        log::notice("configuration reloaded");
      }
      service::notify("READY=1");
      on_hangup();
    });
  };
  on_hangup();

  net::signal_set terminate(http_ctx, SIGINT, SIGTERM);
  // After SIGTERM: in-flight responses may finish, but not forever.
  net::steady_timer grace(http_ctx);
  std::chrono::steady_clock::time_point stop_deadline;
  std::function<void()> finish_stop = [&] {
    if (server.open_connections() == 0) return;
    if (std::chrono::steady_clock::now() >= stop_deadline) {
      log::warning("connections still open after ", shutdown_grace.count(), " s; closing them");
      http_ctx.stop();
      return;
    }
    grace.expires_after(std::chrono::milliseconds(50));
    grace.async_wait([&](boost::system::error_code e) {
      if (!e) finish_stop();
    });
  };
  terminate.async_wait([&](boost::system::error_code e, int signal) {
    if (e) return;
    service::notify("STOPPING=1");
    log::notice("signal ", signal, ": stopping");
    boost::system::error_code ignored;
    hangup.cancel(ignored);
    watchdog_timer.cancel();
    server.stop();
    stop_deadline = std::chrono::steady_clock::now() + shutdown_grace;
    finish_stop();
  });
  ::signal(SIGPIPE, SIG_IGN);

  // run() returns once the server, signals and timers have nothing left to do.
  http_ctx.run();
  demo.reset();
  net::post(watch_ctx, [&] {
    heartbeat_timer.cancel();
    watch.stop();
    watch_work.reset();
  });
  watch_thread.join();
  publish_work.reset();
  publish_thread.join();
  if (auto r = index.flush(); !r) {
    log::error("cannot flush the index: ", r.error().message());
    exit_code = 1;
  }
  log::notice("stopped");
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  daemon::settings s;
  switch (daemon::parse(argc, argv, s)) {
    case daemon::outcome::exit_success:
      return 0;
    case daemon::outcome::exit_failure:
      return 1;
    case daemon::outcome::run:
      break;
  }
  log::set_threshold(s.log_level);
  try {
    return run(std::move(s), argc, argv);
  } catch (const std::exception& e) {
    log::error("fatal: ", e.what());
    return 1;
  }
}
