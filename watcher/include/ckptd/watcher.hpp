#pragma once
// ckptd::watcher — follows training folders and keeps the index equal to them.
//
// It watches job folders with inotify (read through Asio on the io_context it
// is given), recognises checkpoints by their trainer's layout, and reports one
// only once its trainer considers it complete. Every change is written to the
// store first and then announced through `on_job_changed`, so a listener that
// re-reads the job from the store sees the change.
//
// At start it reconciles the store with a scan of the disk (checkpoints added,
// rewritten or removed while ckptd was down; created_at of unchanged ones is
// kept) and then calls `on_reconciled` once.
//
// Thread-safety: construct, start and stop on the io_context's thread; the
// callbacks run there too. The io_context should run on a thread of its own:
// the watcher reads files and writes RocksDB from its handlers.

#include <ckptd/store.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace ckptd::watcher {

// How a folder is followed. inotify sees only changes made through this
// machine's kernel: on NFS, Lustre, GPFS, CephFS, SMB and FUSE mounts, where
// other hosts write, it stays silent, so such folders are polled.
enum class watch_mode {
  automatic,  // poll network and FUSE filesystems (statfs magic), inotify elsewhere
  inotify,
  poll,
};

// A watched folder and, optionally, its own mode and polling interval.
struct folder {
  std::filesystem::path path;
  std::optional<watch_mode> mode;                       // unset: options::mode
  std::optional<std::chrono::milliseconds> poll_interval;  // unset: options::poll_interval
};

struct options {
  // --watch DIR: every immediate subfolder of DIR is a job named after it.
  std::vector<folder> roots;
  // --job UUID=DIR: DIR holds one job's checkpoints directly.
  std::vector<std::pair<std::string, folder>> jobs;
  // Default: automatic.
  watch_mode mode = watch_mode::automatic;
  // How often a polled folder is walked. Default: 10 s.
  std::chrono::milliseconds poll_interval{10000};
  // How many folder levels below a job folder are watched and searched for
  // checkpoints. Default: 4.
  int max_depth = 4;
  // Quiet time after which a checkpoint of a layout without a completion
  // marker (torchtune) counts as complete. Default: 3 s.
  std::chrono::milliseconds settle_time{3000};
  // How often what could not be watched (watch limit reached) is rescanned,
  // folders that could not be read are looked at again, and changes held
  // back while the index could not be written are retried. Default: 30 s.
  std::chrono::milliseconds rescan_interval{30000};
};

struct callbacks {
  // A job appeared, vanished, or its checkpoints changed. The store already
  // holds the change.
  std::function<void(const std::string& job_uuid)> on_job_changed;
  // The first full scan has been reconciled with the store.
  std::function<void()> on_reconciled;
  // The index's health (store::index::healthy()) changed with a write: it
  // turned false when a write failed, true again when one succeeded. Lets
  // readiness follow the index without anyone polling it.
  std::function<void(bool healthy)> on_index_health;
};

class watcher {
 public:
  watcher(boost::asio::io_context& ctx, options opts, store::index& index, callbacks cb);
  ~watcher();
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;

  // Opens inotify, starts the first scan and returns; work continues on the
  // io_context. Throws std::system_error when inotify cannot be opened at all.
  void start();
  // Cancels pending work and closes inotify. Callbacks are not called after.
  void stop();

  // Applies new options to a running watcher (SIGHUP): roots and jobs no
  // longer named are dropped with their checkpoints, new ones are scanned,
  // the rest keep their watches. A changed max_depth rescans every job.
  void reconfigure(options opts);

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace ckptd::watcher
