#pragma once
// ckptd's configuration: one struct of settings, read from the command line
// and, with --config FILE, from an INI file that uses the same names
// ("watch = /data/runs", "rate-limit = 20"). The command line wins.

#include <ckptd/log.hpp>
#include <ckptd/watcher.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace ckptd::daemon {

struct settings {
  // Folders whose immediate subfolders are jobs, each optionally with its own
  // mode and polling interval ("DIR;mode=poll;interval=30"). Default: none.
  std::vector<watcher::folder> watch;
  // Jobs given directly: (job_uuid, folder), "UUID=DIR[;mode=..][;interval=..]".
  // Default: none.
  std::vector<std::pair<std::string, watcher::folder>> jobs;
  // auto (poll network and FUSE filesystems), inotify or poll. Default: auto.
  watcher::watch_mode watch_mode = watcher::watch_mode::automatic;
  // Seconds between walks of a polled folder. Default: 10 s.
  std::chrono::milliseconds poll_interval{10000};
  // Where the RocksDB index lives. Default: $STATE_DIRECTORY/index (systemd's
  // StateDirectory=), else /var/lib/ckptd/index.
  std::string db;
  // Address to serve HTTP on. Default: 127.0.0.1:8321.
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8321;
  // Folder levels below a job searched for checkpoints. Default: 4.
  int max_depth = 4;
  // Quiet time that completes a checkpoint without a completion marker. Default: 3 s.
  std::chrono::milliseconds settle_time{3000};
  // Rescan period for what inotify cannot watch. Default: 30 s.
  std::chrono::milliseconds rescan_interval{30000};
  // Requests per second per client address (0: unlimited). Default: 20.
  double rate_limit = 20;
  // Burst of requests per client address. Default: 40.
  double rate_burst = 40;
  // Default: info.
  log::level log_level = log::level::info;
  // File with one bearer token per line; when set, every route but /healthz
  // and /readyz needs one. Default: none (no auth).
  std::optional<std::string> auth_token_file;
  // The tokens read from auth_token_file.
  std::vector<std::string> auth_tokens;
  // Origins browsers may call from (CORS). Default: none.
  std::vector<std::string> cors_origins;
  // Most connections open at once. Default: 4096.
  std::size_t max_connections = 4096;
  // Most client addresses the rate limiter tracks. Default: 10000.
  std::size_t rate_clients = 10000;
  // Memory for serialized job bodies (--body-cache-mb); 0 keeps every body.
  // Default: 2 MiB.
  std::size_t body_cache_bytes = 2 * 1024 * 1024;
  // --rebuild-index: move the index aside and rebuild it from the disk.
  bool rebuild_index = false;
  // --demo DIR: run a simulated training job in DIR and watch it. Default: off.
  std::optional<std::string> demo_dir;
  // The --config file the settings came from, if any (SIGHUP re-reads it).
  std::optional<std::string> config_file;
};

enum class outcome { run, exit_success, exit_failure };

// Parses argv (and the --config file it names) into `out`. Prints --help,
// --version and errors itself, naming the option, or the key and line of the
// config file. --check-config validates and exits: success or failure.
outcome parse(int argc, char** argv, settings& out);

}  // namespace ckptd::daemon
