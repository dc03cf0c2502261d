// ckptd: wiring. The store is opened first (a refused index stops everything
// before a port is bound), the API serves what the index already holds, and
// the watcher reconciles the index with the disk on its own thread; /readyz
// turns 200 once that first reconcile is done.

#include "demo.hpp"
#include "options.hpp"

#include <ckptd/api.hpp>
#include <ckptd/log.hpp>
#include <ckptd/store.hpp>
#include <ckptd/watcher.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>

#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>

namespace net = boost::asio;
using namespace ckptd;

namespace {

// Re-reads one job from the index (one prefix scan) and hands it to the API.
void publish_job(store::index& index, api::server& server, const std::string& uuid) {
  auto job = index.find_job(uuid);
  if (!job) {
    log::error("cannot read job ", uuid, " from the index: ", job.error().message());
    return;
  }
  if (!*job) {
    server.forget(uuid);
    return;
  }
  auto checkpoints = index.checkpoints(uuid);
  if (!checkpoints) {
    log::error("cannot read checkpoints of job ", uuid, ": ", checkpoints.error().message());
    return;
  }
  server.publish(uuid, std::move(*checkpoints));
}

int run(daemon::settings s) {
  std::unique_ptr<daemon::demo_trainer> demo;
  if (s.demo_dir) {
    const std::filesystem::path dir = std::filesystem::absolute(*s.demo_dir);
    std::filesystem::create_directories(dir / "runs");
    s.watch.push_back((dir / "runs").string());
    s.db = (dir / "db").string();
  }

  std::error_code ec;
  std::filesystem::create_directories(s.db, ec);
  auto opened =
      store::index::open(s.db, [](std::string_view line) { log::warning("rocksdb: ", line); });
  if (!opened) {
    log::error("cannot open the index in ", s.db, ": ", opened.error().message());
    return 1;
  }
  store::index& index = **opened;

  net::io_context http_ctx(1);
  net::io_context watch_ctx(1);

  api::options api_opts;
  api_opts.listen_host = s.listen_host;
  api_opts.listen_port = s.listen_port;
  api_opts.rate_limit = s.rate_limit;
  api_opts.rate_burst = s.rate_burst;
  api::server server(http_ctx, api_opts);
  try {
    server.start();
  } catch (const std::exception& e) {
    log::error("cannot listen on ", s.listen_host, ":", s.listen_port, ": ", e.what());
    return 1;
  }

  // Serve what the index holds while the watcher reconciles it with the disk.
  if (auto jobs = index.jobs()) {
    for (const auto& j : *jobs) publish_job(index, server, j.uuid);
  } else {
    log::error("cannot read jobs from the index: ", jobs.error().message());
  }

  watcher::options watch_opts;
  for (const auto& w : s.watch) watch_opts.roots.emplace_back(w);
  for (const auto& [uuid, dir] : s.jobs) watch_opts.jobs.emplace_back(uuid, dir);
  watch_opts.max_depth = s.max_depth;
  watch_opts.settle_time = s.settle_time;
  watch_opts.rescan_interval = s.rescan_interval;
  watcher::callbacks cb;
  cb.on_job_changed = [&](const std::string& uuid) { publish_job(index, server, uuid); };
  cb.on_reconciled = [&] { server.set_ready(true); };
  watcher::watcher watch(watch_ctx, watch_opts, index, cb);

  int exit_code = 0;
  auto watch_work = net::make_work_guard(watch_ctx);
  net::post(watch_ctx, [&] {
    try {
      watch.start();
    } catch (const std::exception& e) {
      log::error("cannot start watching: ", e.what());
      exit_code = 1;
      net::post(http_ctx, [&] { server.stop(); });
    }
  });
  std::thread watch_thread([&] { watch_ctx.run(); });

  if (s.demo_dir) demo = std::make_unique<daemon::demo_trainer>(s.watch.back());

  net::signal_set signals(http_ctx, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code error, int signal) {
    if (error) return;
    log::notice("signal ", signal, ": stopping");
    server.stop();
  });
  ::signal(SIGPIPE, SIG_IGN);

  http_ctx.run();
  demo.reset();
  net::post(watch_ctx, [&] {
    watch.stop();
    watch_work.reset();
  });
  watch_thread.join();
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
      return 2;
    case daemon::outcome::run:
      break;
  }
  log::set_threshold(s.log_level);
  try {
    return run(std::move(s));
  } catch (const std::exception& e) {
    log::error("fatal: ", e.what());
    return 1;
  }
}
