// The watcher engine: inotify read through Asio, a tree of watched folders,
// and the bookkeeping that turns file events into index changes.
//
// Shape of the work:
//  - Every folder from a job folder down to `max_depth` levels (and a few
//    levels inside each checkpoint) gets an inotify watch. A new folder is
//    watched first and listed second, so files created before its watch
//    existed are still seen.
//  - A file event marks its *candidate* (the checkpoint folder or file it
//    belongs to) dirty; after the kernel queue is drained each dirty
//    candidate is judged once by its layout (layout.hpp) and the verdicts are
//    written to the store, one write batch per job, before anyone is told.
//  - Scans (start, rescans, new subtrees) go through a task queue that is
//    pumped a bounded number of tasks at a time, so inotify events are
//    handled between the steps of a large scan.

#include <ckptd/checkpoint_json.hpp>
#include <ckptd/log.hpp>
#include <ckptd/metrics.hpp>
#include <ckptd/watcher.hpp>

#include "filesystems.hpp"
#include "formats.hpp"
#include "job_status.hpp"
#include "layout.hpp"
#include "worker_pool.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace ckptd::watcher {
namespace {

namespace net = boost::asio;
using clock = std::chrono::steady_clock;

// Tasks run per turn of the event loop before inotify gets its turn again.
constexpr int tasks_per_turn = 64;
// Candidates queued for judging that worker threads list and read ahead of
// the engine (see look_ahead): enough to keep the workers busy while the
// engine writes a turn's changes (a look holds no open folder, only what it
// found), handed over a few at a time so that waking a worker is rare.
constexpr std::size_t looks_ahead = 256;
constexpr std::size_t looks_per_handover = 8;
// Worker threads for that, at most: listing and reading are system calls,
// which scale with cores until the filesystem's locks say otherwise.
constexpr unsigned max_judging_threads = 4;
// Folder levels watched inside a checkpoint folder (adapter/, weights/, ...).
constexpr int candidate_inner_depth = 3;
// Bump when a layout's rules change: listing hashes (and so the verdicts the
// index remembers with them) of older builds then match nothing.
constexpr std::uint64_t judging_rules_version = 1;
// Read buffer for inotify: room for many events with long names.
constexpr std::size_t inotify_buffer_bytes = 256 * 1024;

constexpr std::uint32_t dir_mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                   IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF |
                                   IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;
constexpr std::uint32_t root_mask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                    IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
                                    IN_DONT_FOLLOW;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Whether a failed lookup or listing says nothing about the folder's
// content: anything but "does not exist" (EACCES on it or a parent, EIO,
// ...). Such a folder is unknown, not empty: what was indexed under it stays.
bool is_unknown_error(int error) { return error != 0 && error != ENOENT && error != ENOTDIR; }

// The error that keeps `path` from being looked into (lstat, and for a
// folder opening it), when it is not "does not exist"; 0 otherwise.
int hidden_by(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return is_unknown_error(errno) ? errno : 0;
  if (!S_ISDIR(st.st_mode)) return 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return is_unknown_error(errno) ? errno : 0;
  ::close(fd);
  return 0;
}

bool is_dir_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Whether a folder is certainly not there (or is no folder): an error other
// than ENOENT/ENOTDIR leaves it unknown, not gone.
bool folder_gone(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return !is_unknown_error(errno);
  return !S_ISDIR(st.st_mode);
}

bool exists_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// Is `path` equal to `dir` or inside it?
bool within(std::string_view path, std::string_view dir) {
  return path.size() >= dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         (path.size() == dir.size() || path[dir.size()] == '/');
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == 0 ? std::string("/") : path.substr(0, slash);
}

std::string_view name_of(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// The push events that go into the index with a change (data is JSON).
store::event created_event(const std::string& job, const store::checkpoint& cp) {
  std::string data;
  // Room for a checkpoint with metrics: one allocation, not one per doubling.
  data.reserve(320 + 2 * job.size() + cp.identifier.size() + cp.path.size());
  data += "{\"job_uuid\":";
  json_text::append_string(data, job);
  data += ",\"checkpoint\":";
  json_text::append_checkpoint(data, cp, job);
  data += '}';
  return store::event{0, job, "checkpoint.created", std::move(data), 0};
}

store::event deleted_event(const std::string& job, const std::string& identifier,
                           const std::string& path) {
  std::string data = "{\"job_uuid\":";
  json_text::append_string(data, job);
  data += ",\"identifier\":";
  json_text::append_string(data, identifier);
  data += ",\"path\":";
  json_text::append_string(data, path);
  data += '}';
  return store::event{0, job, "checkpoint.deleted", std::move(data), 0};
}

store::event status_event(const std::string& job, const std::string& status) {
  std::string data = "{\"job_uuid\":";
  json_text::append_string(data, job);
  data += ",\"status\":";
  json_text::append_string(data, status);
  data += '}';
  return store::event{0, job, "job.status", std::move(data), 0};
}

// A checkpoint record's evidence of completion and whole content, hashed:
// what the watcher keeps of it in memory (see candidate_record).
std::uint64_t fingerprint_hash_of(const store::checkpoint& cp) {
  fingerprint_hash hash;
  hash.add(cp.fingerprint);
  return hash.value();
}

std::uint64_t content_hash_of(const store::checkpoint& cp) {
  fingerprint_hash hash;
  hash.add(cp.identifier);
  hash.add(static_cast<std::uint64_t>(cp.epoch));
  hash.add(static_cast<std::uint64_t>(cp.step));
  hash.add(static_cast<std::uint64_t>(cp.created_at_ns));
  hash.add(std::uint64_t{cp.metrics.has_value()});
  if (cp.metrics) {
    hash.add(static_cast<std::uint64_t>(cp.metrics->epoch));
    for (double v : {cp.metrics->train_loss, cp.metrics->validation_loss, cp.metrics->perplexity})
      hash.add(std::bit_cast<std::uint64_t>(v));
  }
  hash.add(cp.fingerprint);
  hash.add(cp.listing_hash);
  return hash.value();
}

// The folder's birth time where the filesystem records one; 0 otherwise.
std::int64_t birth_time_ns(const std::string& path) {
  struct statx st {};
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BTIME, &st) != 0 ||
      !(st.stx_mask & STATX_BTIME))
    return 0;
  return st.stx_btime.tv_sec * 1'000'000'000LL + st.stx_btime.tv_nsec;
}

std::optional<std::int64_t> mtime_ns(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
}

struct dir_entry {
  std::string name;
  bool is_dir = false;
};

// Lists a folder without following symlinks. An unreadable or vanished folder
// yields an empty list and, for the caller's log, its errno.
std::vector<dir_entry> list_dir(const std::string& path, int& error) {
  std::vector<dir_entry> out;
  error = 0;
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    error = errno;
    return out;
  }
  // getdents64 into a stack buffer: no fdopendir (an fcntl and a 32 KiB
  // malloc per folder). As with readdir before, an error mid-listing ends the
  // list with what was read.
  dir_reader reader(fd);
  dir_entry_view e;
  while (reader.next(e)) {
    bool is_dir = e.type == DT_DIR;
    if (e.type == DT_UNKNOWN) {  // some filesystems (XFS without ftype, FUSE) say nothing
      struct stat st {};
      is_dir = ::fstatat(fd, e.name.data(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    out.push_back({std::string(e.name), is_dir});
  }
  ::close(fd);
  return out;
}

std::uint64_t read_proc_number(const char* path) {
  std::ifstream in(path);
  std::uint64_t value = 0;
  in >> value;
  return value;
}

}  // namespace

class watcher::impl {
 public:
  impl(net::io_context& ctx, options opts, store::index& index, callbacks cb)
      : ctx_(ctx),
        opts_(std::move(opts)),
        index_(index),
        cb_(std::move(cb)),
        inotify_(ctx),
        pump_scheduled_(false),
        rescan_timer_(ctx),
        buffer_(inotify_buffer_bytes) {}

  void start() {
    int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), "inotify_init1");
    inotify_.assign(fd);
    read_watch_limit();
    log::info("inotify: up to ", max_watches_, " watches per user (", watch_limit_sysctl_, ")");
    if (const unsigned cores = std::thread::hardware_concurrency(); cores > 1) {
      pool_ = std::make_unique<worker_pool>(std::min(cores, max_judging_threads));
    }

    load_known();
    for (const auto& root : opts_.roots) add_root(configured_path(root.path), how_to_follow(root));
    for (const auto& [uuid, f] : opts_.jobs) {
      auto dir = resolve(f.path);
      add_job(uuid, dir, /*root=*/"", how_to_follow(f, dir));
    }
    drop_jobs_not_configured();
    enqueue({task::reconciled, "", "", 0});
    read_events();
    arm_rescan_timer();
    pump();
  }

  void reconfigure(options opts) {
    const bool depth_changed = opts.max_depth != opts_.max_depth;
    std::map<std::string, folder> new_roots;
    for (const auto& r : opts.roots) new_roots[configured_path(r.path)] = r;
    std::map<std::string, std::pair<std::string, folder>> new_jobs;  // uuid -> dir, --job only
    for (const auto& [uuid, f] : opts.jobs) new_jobs[uuid] = {resolve(f.path), f};
    opts_ = std::move(opts);

    // Roots no longer configured: their jobs go.
    for (std::size_t i = 0; i < roots_.size();) {
      if (new_roots.contains(roots_[i].configured)) {
        new_roots.erase(roots_[i].configured);
        ++i;
        continue;
      }
      log::notice("no longer watching ", roots_[i].configured);
      detach_root(roots_[i]);
      if (roots_[i].poll_timer) roots_[i].poll_timer->cancel();
      roots_.erase(roots_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    // --job entries no longer configured, or moved.
    std::vector<std::string> gone;
    for (auto& [uuid, js] : jobs_) {
      if (!js.root.empty()) continue;
      auto it = new_jobs.find(uuid);
      if (it == new_jobs.end() || it->second.first != js.dir) gone.push_back(uuid);
    }
    for (auto& uuid : gone) remove_job(uuid);
    for (auto& [root, f] : new_roots) {
      log::notice("now watching ", root);
      add_root(root, how_to_follow(f));
    }
    for (auto& [uuid, entry] : new_jobs) {
      if (!jobs_.contains(uuid))
        add_job(uuid, entry.first, /*root=*/"", how_to_follow(entry.second, entry.first));
    }
    if (depth_changed) rescan_all();
    rescan_timer_.cancel();
    arm_rescan_timer();
    flush();
    schedule_pump();
  }

  void stop() {
    stopped_ = true;
    boost::system::error_code ignored;
    rescan_timer_.cancel();
    for (auto& [path, s] : settling_) s.timer->cancel();
    // The workers first: a look being taken may still add a watch, and must
    // not find the inotify descriptor closed (or its number reused).
    looks_.clear();
    handed_.clear();
    pool_.reset();  // waits for the looks being taken: a listing or a read each
    orphans_.clear();
    inotify_.close(ignored);
  }

 private:
  // ---- state ---------------------------------------------------------------

  // How one folder (a root or a --job folder) is followed.
  struct follow {
    bool polled = false;
    std::chrono::milliseconds interval{0};
    listing_end listings_end = listing_end::empty_read;  // of its candidate folders
  };

  struct watch_root {
    std::string configured;  // as configured (absolute), symlinks not resolved
    std::string path;        // where `configured` led when last attached
    follow how;
    int wd = -1;            // inotify watch; -1 when polled, missing or unwatchable
    bool attached = false;  // its jobs have been listed
    std::shared_ptr<net::steady_timer> poll_timer;
  };

  // One per watched folder, 100,000s of them: the job's uuid is shared with
  // its job_state, not copied into each.
  struct node {
    std::string path;
    std::shared_ptr<const std::string> job;  // null for a watch root
    int depth = 0;                           // 0 = the job folder itself
  };

  // What ckptd remembers of one candidate: its last judgement (a hash of its
  // listing — names, sizes, mtimes — and the verdict: an unchanged listing is
  // not read again, so an event next to a finished checkpoint costs a listing
  // only) and, when the index holds it as a checkpoint, what deciding on its
  // next judgement needs. There is one per checkpoint, 100,000s of them, so
  // it holds no path and no fingerprint, only hashes: the index has the rest.
  // A polled candidate folder holding regular files only: its mtime and the
  // names it held when listed ('\0'-separated).
  struct flat_folder {
    std::int64_t mtime_ns = 0;
    std::string names;
  };

  struct candidate_record {
    // The listing last judged; for an indexed record not yet judged in this
    // run, the one the index stored with it. 0: none.
    std::uint64_t listing_hash = 0;
    std::uint64_t fingerprint_hash = 0;  // indexed: of its evidence of completion
    std::uint64_t content_hash = 0;      // indexed: of the whole record, as written
    std::int64_t created_at_ns = 0;      // indexed: as in the index
    // Indexed, and only when it is not the candidate's name (rarely).
    std::unique_ptr<std::string> identifier;
    // Polled flat folders only: see listing_by_names.
    std::unique_ptr<flat_folder> flat;
    state verdict = state::incomplete;
    bool judged = false;        // listing_hash and verdict come from this run
    bool indexed = false;       // the index holds it as a checkpoint
    bool seen_in_scan = false;  // judged during the job's current scan
  };

  struct job_state {
    std::string uuid;
    std::string dir;
    std::string root;  // watch root it came from; empty for --job
    // By path relative to `dir` ("checkpoint-500", "run/epoch_1").
    std::map<std::string, candidate_record> candidates;
    // Weakly claimed folders judged not to be their layout's checkpoints,
    // searched inside like plain folders (search_inside); cleared by a full
    // scan, which walks them again.
    std::set<std::string> opened;
    follow how;
    std::shared_ptr<net::steady_timer> poll_timer;
    std::shared_ptr<const std::string> uuid_shared;  // the uuid, for its watches' nodes
    store::job record;         // as in the index: dir, first seen, status
    bool status_dirty = true;  // the job folder's top level changed since the status was judged
    bool scanning = false;
    std::size_t found_in_scan = 0;  // complete checkpoints new to the index, this scan
    bool incomplete_watch = false;  // some folder could not be watched
  };

  struct settle_state {
    clock::time_point last_activity;
    std::string size_signature;
    std::unique_ptr<net::steady_timer> timer;
  };

  // What judging a candidate takes from the disk: its view, the hash of its
  // listing, the layout that owns it and, when asked for, that layout's
  // verdict. Taken without any engine state (see look_at), so worker threads
  // can take it ahead of the engine (see look_ahead).
  struct look {
    bool gone = true;  // not there (or not a folder or regular file)
    // Kept only when asked for (see look_at): a worker lets go of it, so
    // that the folder is closed and the listing freed on its own thread.
    std::unique_ptr<candidate_view> view;
    std::uint64_t listing = 0;
    const layout* owner = nullptr;       // nullptr: no layout claims it
    std::optional<recognition> verdict;  // unset: not asked for
    std::vector<std::string> folders;    // inside it, relative: for watch_new_interior
    // With a watch asked for: what inotify_add_watch gave before the listing.
    bool watched = false;
    int wd = -1;
    int watch_error = 0;
  };

  // A look to take ahead of the engine, by whoever comes first: a worker,
  // or the engine when it reaches the candidate's task, which then looks
  // itself rather than wait for a worker that has not started.
  struct look_slot {
    enum phase_t : int { pending, taken, done };
    std::string path;
    std::uint64_t known_listing = 0;  // see look_at's judge_unless
    int inotify_fd = -1;              // >= 0: watch the candidate first (see look_at)
    listing_end listings_end = listing_end::empty_read;  // its job's (follow::listings_end)
    std::atomic<int> phase{pending};
    std::optional<look> result;  // written before phase turns done; unset: it failed
  };

  struct task {
    enum kind_t { scan_job, scan_dir, evaluate, finish_job, reconciled } kind;
    std::string job;
    std::string path;
    int depth = 0;
  };

  // The engine's queue. It also remembers how many of its front tasks
  // look_ahead() has been through already, so that each task is visited once
  // rather than once per task run ahead of it (100,000s at start), and lets
  // look_ahead() run a scan where it stands in the queue (run_in_place).
  class task_queue {
   public:
    bool empty() const { return tasks_.empty(); }
    std::size_t size() const { return tasks_.size(); }
    const task& operator[](std::size_t i) const { return tasks_[i]; }
    void push_back(task t) { tasks_.push_back(std::move(t)); }
    // "Front" is the place of the task being run: the queue's front, or
    // where run_in_place took it from. Tasks put there are new to
    // look_ahead(): what it went through is visited again from there.
    void push_front(task t) {
      tasks_.insert(tasks_.begin() + static_cast<std::ptrdiff_t>(front_), std::move(t));
      visited_ = std::min(visited_, front_);
    }
    // All of `ts`, in their order, in one move of the tasks after them.
    void push_front(std::vector<task>&& ts) {
      // Not for nothing: GCC 12's deque moves the tasks after an empty range
      // onto themselves, which empties their strings.
      if (ts.empty()) return;
      tasks_.insert(tasks_.begin() + static_cast<std::ptrdiff_t>(front_),
                    std::make_move_iterator(ts.begin()), std::make_move_iterator(ts.end()));
      visited_ = std::min(visited_, front_);
    }
    task pop_front() {
      task t = std::move(tasks_.front());
      tasks_.pop_front();
      if (visited_ > 0) --visited_;
      return t;
    }
    // Runs task i now, and what it queues "in front" takes its place.
    template <typename Run>
    void run_in_place(std::size_t i, Run&& run) {
      task t = std::move(tasks_[i]);
      tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(i));
      visited_ = std::min(visited_, i);
      front_ = i;
      run(t);
      front_ = 0;
    }
    std::size_t visited() const { return visited_; }
    void set_visited(std::size_t n) { visited_ = n; }

   private:
    std::deque<task> tasks_;
    std::size_t visited_ = 0;
    std::size_t front_ = 0;
  };

  net::io_context& ctx_;
  options opts_;
  store::index& index_;
  callbacks cb_;
  net::posix::stream_descriptor inotify_;
  bool pump_scheduled_;
  net::steady_timer rescan_timer_;
  std::vector<char> buffer_;
  bool stopped_ = false;
  bool reconciled_ = false;
  std::uint64_t max_watches_ = 0;
  std::string_view watch_limit_sysctl_ = "fs.inotify.max_user_watches";
  bool watch_limit_logged_ = false;
  bool index_healthy_ = true;  // as last reported through on_index_health

  std::vector<watch_root> roots_;
  std::unordered_map<int, node> nodes_;  // wd -> node
  // path -> wd, ordered for subtree ranges; keys point into nodes_ (see remember_watch)
  std::map<std::string_view, int, std::less<>> wd_by_path_;
  std::map<std::string, job_state> jobs_;  // uuid -> job
  task_queue tasks_;
  std::set<std::pair<std::string, std::string>> dirty_;  // (job, candidate path)
  std::map<std::string, store::job_change> pending_;     // job -> change not yet written
  std::map<std::string, settle_state> settling_;         // candidate path -> quiet-time tracking
  std::set<std::string> status_due_;                     // jobs whose status must be judged again
  // Set from a failed index write until held-back changes are written again;
  // meanwhile changes are not attempted, only remembered by job.
  bool index_outage_ = false;
  std::set<std::string> unwritten_;        // jobs whose latest changes the index lacks
  std::map<std::string, int> unreadable_;  // folder -> errno; see note_unreadable
  std::set<std::string> unannounced_;  // jobs written but not yet announced (still scanning)
  // When the inotify events being handled were read, and per job the first
  // completion they revealed: the start of the ingest latency.
  std::optional<clock::time_point> events_seen_at_;
  std::map<std::string, clock::time_point> completion_seen_;
  // Threads that take looks at queued candidates ahead of the engine, and
  // those looks by candidate path until evaluate() takes them (look_ahead).
  // No pool on a single core.
  std::unique_ptr<worker_pool> pool_;
  std::unordered_map<std::string, std::shared_ptr<look_slot>> looks_;
  // The same looks in the order they were handed over, for the engine to
  // take one itself while it waits for a worker (take_look_ahead); the front
  // ones already taken are dropped as it goes.
  std::deque<std::shared_ptr<look_slot>> handed_;
  // Candidate folders a scan found and queued but left unwatched: inotify
  // watches cost the kernel a path walk each, 100,000s of them at start, so
  // the worker that looks at the candidate ahead adds the watch right before
  // its listing, and the engine records it when it takes the look (or adds
  // it itself when it looks inline). Emptied whenever the queue is.
  std::unordered_set<std::string> unwatched_;
  // Events of watches added by workers and not recorded yet (raw, as read),
  // replayed when their watch is (see took_watch_ahead). Bounded; past the
  // bound every job is rescanned once the looks in flight are done.
  static constexpr std::size_t max_orphans = 4096;
  std::deque<std::string> orphans_;
  bool orphans_overflowed_ = false;

  // ---- jobs and roots --------------------------------------------------------

  // Loads what the store knows, so that reconcile can keep created_at and
  // remove what is gone.
  void load_known() {
    auto jobs = index_.jobs();
    if (!jobs) {
      log::error("cannot read jobs from the index: ", jobs.error().message());
      return;
    }
    // Reading and decoding every record is most of a restart's work before
    // the scan: the workers do it, job by job, and the engine takes the
    // results in order.
    std::vector<std::pair<job_state*, std::future<indexed_job>>> loading;
    for (auto& j : *jobs) {
      auto& js = jobs_[j.uuid];
      js.uuid = j.uuid;
      js.dir = j.dir;
      js.record = j;
      if (!pool_) {
        load_indexed(js);
        continue;
      }
      loading.emplace_back(&js, pool_->submit([&index = std::as_const(index_), uuid = js.uuid,
                                               dir = js.dir] {
        return read_indexed(index, uuid, dir);
      }));
    }
    for (auto& [js, reading] : loading) load_indexed(*js, reading.get());
  }

  // A job's checkpoints as the index holds them: as candidate records by
  // path relative to the job's folder (in path order), and those outside
  // the folder. Reads the index only, so any thread may call it.
  struct indexed_job {
    std::vector<std::pair<std::string, candidate_record>> inside;
    std::vector<store::checkpoint> outside;
    std::string error;  // empty unless the index could not be read
  };

  static indexed_job read_indexed(const store::index& index, const std::string& uuid,
                                  const std::string& dir) {
    indexed_job out;
    auto cps = index.checkpoints(uuid);
    if (!cps) {
      out.error = cps.error().message();
      return out;
    }
    out.inside.reserve(cps->size());
    for (auto& cp : *cps) {
      if (!within(cp.path, dir) || cp.path.size() == dir.size()) {
        out.outside.push_back(std::move(cp));
        continue;
      }
      candidate_record r;
      r.listing_hash = cp.listing_hash;
      r.verdict = state::complete;
      remember_indexed(r, cp);
      out.inside.emplace_back(cp.path.substr(dir.size() + 1), std::move(r));
    }
    return out;
  }

  // Believes the index about a job's checkpoints (at start, and after a
  // failed write). A record outside the job's folder cannot be one of its
  // checkpoints: it is removed.
  void load_indexed(job_state& js) { load_indexed(js, read_indexed(index_, js.uuid, js.dir)); }

  void load_indexed(job_state& js, indexed_job loaded) {
    if (!loaded.error.empty()) {
      log::error("cannot read checkpoints of job ", js.uuid, ": ", loaded.error);
      return;
    }
    for (auto& cp : loaded.outside) {
      pending_for(js.uuid).removed_paths.push_back(cp.path);
      pending_for(js.uuid).events.push_back(deleted_event(js.uuid, cp.identifier, cp.path));
    }
    // In path order: at start, each goes at the end of the map (the hint).
    for (auto& [rel, r] : loaded.inside) {
      js.candidates.insert_or_assign(js.candidates.end(), std::move(rel), std::move(r));
    }
  }

  static void remember_indexed(candidate_record& r, const store::checkpoint& cp) {
    r.indexed = true;
    r.created_at_ns = cp.created_at_ns;
    r.fingerprint_hash = fingerprint_hash_of(cp);
    r.content_hash = content_hash_of(cp);
    r.identifier = cp.identifier == name_of(cp.path)
                       ? nullptr
                       : std::make_unique<std::string>(cp.identifier);
  }

  // The path and identifier of an indexed candidate, for its deletion.
  static std::string identifier_of(const std::string& rel, const candidate_record& r) {
    return r.identifier ? *r.identifier : std::string(name_of(rel));
  }

  // Records the removal of an indexed candidate from the index, with its event.
  void unindex(job_state& js, const std::string& rel, candidate_record& r) {
    const std::string path = js.dir + "/" + rel;
    log::info("checkpoint ", path, " of job ", js.uuid, " is gone");
    pending_for(js.uuid).removed_paths.push_back(path);
    pending_for(js.uuid).events.push_back(deleted_event(js.uuid, identifier_of(rel, r), path));
    r.indexed = false;
  }

  // A configured folder given through a symlink is watched where it points.
  // --job folders are resolved once, at start; watch roots each time they
  // are attached and at every rescan tick (see root_moved), so a root
  // replaced by a symlink (or a symlink pointed elsewhere) is followed.
  // Symlinks below a root or job folder are never followed.
  static std::string resolve(const std::filesystem::path& p) {
    std::error_code ec;
    auto resolved = std::filesystem::weakly_canonical(std::filesystem::absolute(p), ec);
    return (ec ? std::filesystem::absolute(p).lexically_normal() : resolved).string();
  }

  // Polling or inotify for a configured folder, by its mode or, in automatic
  // mode, by the filesystem it sits on.
  follow how_to_follow(const folder& f, std::string resolved = {}) const {
    if (resolved.empty()) resolved = resolve(f.path);
    follow how;
    how.interval = f.poll_interval.value_or(opts_.poll_interval);
    switch (f.mode.value_or(opts_.mode)) {
      case watch_mode::poll:
        how.polled = true;
        break;
      case watch_mode::inotify:
        how.polled = false;
        break;
      case watch_mode::automatic: {
        auto fs = remote_filesystem_name(resolved);
        how.polled = !fs.empty();
        if (how.polled)
          log::notice(resolved, " is on ", fs,
                      ", where inotify misses other hosts' writes: polling it every ",
                      how.interval.count() / 1000.0, " s");
        break;
      }
    }
    // Polled folders are listed the careful way: they are mostly on network
    // filesystems, and a poll relists them anyway.
    if (!how.polled) how.listings_end = listing_end_below(resolved);
    return how;
  }

  static std::string configured_path(const std::filesystem::path& p) {
    return std::filesystem::absolute(p).lexically_normal().string();
  }

  void add_root(const std::string& configured, follow how) {
    watch_root r;
    r.configured = configured;
    r.path = resolve(configured);
    r.how = how;
    roots_.push_back(std::move(r));
    attach_root(roots_.size() - 1);
    if (how.polled) arm_root_poll(roots_.size() - 1);
  }

  // Watches a root (unless polled) and adds every subfolder as a job. A
  // missing or unreadable root is retried by the rescan timer; the jobs of
  // an unreadable one are kept as the index has them meanwhile.
  void attach_root(std::size_t i) {
    auto& r = roots_[i];
    if (!r.how.polled) {
      int wd = ::inotify_add_watch(inotify_.native_handle(), r.path.c_str(), root_mask);
      if (wd < 0) {
        const int error = errno;
        if (error == ENOSPC) {
          log_watch_limit();
        } else if (is_unknown_error(error)) {
          note_unreadable(r.path, error);
          keep_jobs_of_unreadable_root(r);
          return;
        } else {
          note_problem(r.path, std::string("cannot watch this root: ") + std::strerror(error) +
                                   "; retrying every " +
                                   std::to_string(opts_.rescan_interval.count() / 1000) + " s");
          return;
        }
      } else {
        r.wd = wd;
        remember_watch(wd, node{r.path, nullptr, -1});
      }
    } else if (int error = hidden_by(r.path)) {
      note_unreadable(r.path, error);
      keep_jobs_of_unreadable_root(r);
      return;
    } else if (!is_dir_nofollow(r.path)) {
      note_problem(r.path, "watch root does not exist (yet)");
      return;
    }
    r.attached = true;
    problems_logged_.erase(r.path);
    sync_root_jobs(r);
  }

  // Makes the root's jobs those its listing shows. An unreadable listing
  // changes nothing: the jobs stay as they are until it can be read.
  void sync_root_jobs(watch_root& r) {
    int error = 0;
    auto entries = list_dir(r.path, error);
    if (is_unknown_error(error)) {
      note_unreadable(r.path, error);
      keep_jobs_of_unreadable_root(r);
      return;
    }
    note_readable(r.path);
    std::set<std::string> present;
    for (auto& e : entries) {
      if (!e.is_dir || !is_job_name(e.name)) continue;
      present.insert(e.name);
      auto it = jobs_.find(e.name);
      if (it == jobs_.end() || it->second.dir != r.path + "/" + e.name || it->second.root.empty())
        add_job(e.name, r.path + "/" + e.name, r.path, r.how);
    }
    std::vector<std::string> gone;
    for (auto& [uuid, js] : jobs_) {
      if (js.root == r.path && !present.contains(uuid)) gone.push_back(uuid);
    }
    for (auto& uuid : gone) remove_job(uuid);
  }

  // The jobs the index holds under a root that cannot be listed belong to it
  // still (at start they would otherwise be dropped as no longer configured).
  // Their scans find them unreadable too and keep their checkpoints.
  void keep_jobs_of_unreadable_root(const watch_root& r) {
    for (auto& [uuid, js] : jobs_) {
      if (parent_of(js.dir) != r.path || js.scanning) continue;
      if (!js.root.empty() && js.root != r.path) continue;
      js.root = r.path;
      js.how = r.how;
      enqueue({task::scan_job, uuid, js.dir, 0});
    }
  }

  void arm_root_poll(std::size_t i) {
    auto& r = roots_[i];
    if (!r.poll_timer) r.poll_timer = std::make_shared<net::steady_timer>(ctx_);
    r.poll_timer->expires_after(r.how.interval);
    r.poll_timer->async_wait([this, configured = r.configured](boost::system::error_code ec) {
      if (ec || stopped_) return;
      for (std::size_t k = 0; k < roots_.size(); ++k) {
        if (roots_[k].configured != configured) continue;
        rescan_root(k);
        flush();
        arm_root_poll(k);
      }
    });
  }

  static bool is_job_name(std::string_view name) {
    return !name.empty() && name.front() != '.' && !is_staging_name(name);
  }

  // Makes `uuid` a job at `dir`, records it, and queues its scan.
  void add_job(const std::string& uuid, const std::string& dir, const std::string& root,
               follow how) {
    auto [it, inserted] = jobs_.try_emplace(uuid);
    auto& js = it->second;
    if (!inserted && js.scanning && js.dir == dir) return;
    if (!inserted && !js.dir.empty() && js.dir != dir && !js.root.empty() &&
        exists_nofollow(js.dir)) {
      log::warning("job ", uuid, " exists in two watch roots; keeping ", js.dir, ", ignoring ",
                   dir);
      return;
    }
    js.uuid = uuid;
    if (js.dir != dir) {
      // The job moved (or is new): whatever was indexed under the old folder is stale.
      for (auto& [rel, r] : js.candidates) {
        if (!r.indexed) continue;
        pending_for(uuid).removed_paths.push_back(js.dir + "/" + rel);
        pending_for(uuid).events.push_back(
            deleted_event(uuid, identifier_of(rel, r), js.dir + "/" + rel));
      }
      js.candidates.clear();
      js.dir = dir;
    }
    js.root = root;
    js.how = how;
    if (js.record.dir != dir || js.record.first_seen_ns == 0) {
      js.record = store::job{};
      js.record.uuid = uuid;
      js.record.dir = dir;
      js.record.first_seen_ns = now_ns();
      pending_for(uuid).upsert_job = js.record;
    }
    js.status_dirty = true;
    enqueue({task::scan_job, uuid, dir, 0});
  }

  void remove_job(const std::string& uuid) {
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) return;
    unwatch_subtree(it->second.dir);
    forget_settling(it->second.dir);
    if (it->second.poll_timer) it->second.poll_timer->cancel();
    auto& change = pending_for(uuid);
    change = store::job_change{};
    change.job_uuid = uuid;
    change.remove_job = true;
    for (auto& [rel, r] : it->second.candidates) {
      if (r.indexed)
        change.events.push_back(
            deleted_event(uuid, identifier_of(rel, r), it->second.dir + "/" + rel));
    }
    jobs_.erase(it);
    log::info("job ", uuid, " is gone");
  }

  // Jobs the store remembers from an earlier run but that no configured root
  // or --job names any more.
  void drop_jobs_not_configured() {
    std::vector<std::string> gone;
    for (auto& [uuid, js] : jobs_) {
      if (!js.scanning) gone.push_back(uuid);
    }
    for (auto& uuid : gone) remove_job(uuid);
  }

  // ---- watches ---------------------------------------------------------------

  // Adds (or refreshes) the watch of a folder inside a job. False when it
  // could not be watched; the folder is then covered by periodic rescans.
  bool watch_dir(const std::string& path, const std::string& job, int depth) {
    if (auto it = jobs_.find(job); it != jobs_.end() && it->second.how.polled) return true;
    const int wd = ::inotify_add_watch(inotify_.native_handle(), path.c_str(), dir_mask);
    return took_watch(path, job, depth, wd, wd < 0 ? errno : 0);
  }

  // Records the outcome of inotify_add_watch on `path` (here or on a worker,
  // see look_at): the watch's node, or the error.
  bool took_watch(const std::string& path, const std::string& job, int depth, int wd, int error) {
    if (wd < 0) {
      if (error == ENOSPC) {
        log_watch_limit();
      } else if (error == EACCES) {
        note_unreadable(path, error);
      } else if (is_unknown_error(error)) {
        log::warning("cannot watch ", path, ": ", std::strerror(error));
      }
      if (is_unknown_error(error)) {
        if (auto it = jobs_.find(job); it != jobs_.end()) it->second.incomplete_watch = true;
      }
      return false;
    }
    std::shared_ptr<const std::string> owner;
    if (auto it = jobs_.find(job); it != jobs_.end()) {
      if (!it->second.uuid_shared) it->second.uuid_shared = std::make_shared<const std::string>(job);
      owner = it->second.uuid_shared;
    } else {
      owner = std::make_shared<const std::string>(job);
    }
    remember_watch(wd, node{path, std::move(owner), depth});
    return true;
  }

  // Since Linux 5.11 watches are also counted per user namespace, whose
  // user.max_inotify_watches may be the lower limit (in a container): the
  // lower one binds, and it is the one to name when it is reached.
  void read_watch_limit() {
    const auto global = read_proc_number("/proc/sys/fs/inotify/max_user_watches");
    const auto in_namespace = read_proc_number("/proc/sys/user/max_inotify_watches");
    const bool namespace_binds = in_namespace > 0 && (global == 0 || in_namespace < global);
    max_watches_ = namespace_binds ? in_namespace : global;
    watch_limit_sysctl_ =
        namespace_binds ? "user.max_inotify_watches" : "fs.inotify.max_user_watches";
  }

  // nodes_ owns each watched path; the keys of wd_by_path_ are views of those
  // strings (a node-based map keeps them in place), so each of 100,000s of
  // watched folders has its path stored once.
  void remember_watch(int wd, node n) {
    forget_watch(wd);  // the same folder watched again, maybe under a new name
    // An older watch of this path (the folder was replaced) keeps its node
    // until its IN_IGNORED, but the path now means this watch.
    if (auto same = wd_by_path_.find(n.path); same != wd_by_path_.end()) wd_by_path_.erase(same);
    const auto& stored = nodes_[wd] = std::move(n);
    wd_by_path_[stored.path] = wd;
  }

  void forget_watch(int wd) {
    auto it = nodes_.find(wd);
    if (it == nodes_.end()) return;
    if (auto by_path = wd_by_path_.find(it->second.path);
        by_path != wd_by_path_.end() && by_path->second == wd)
      wd_by_path_.erase(by_path);  // before the node: its key is a view of the node's path
    nodes_.erase(it);
  }

  void log_watch_limit() {
    if (watch_limit_logged_) return;
    watch_limit_logged_ = true;
    log::error("inotify watch limit reached (", nodes_.size(), " watches in use, ",
               watch_limit_sysctl_, " = ", max_watches_,
               "); folders beyond it are rescanned every ", opts_.rescan_interval.count() / 1000.0,
               " s. Raise the limit: sysctl ", watch_limit_sysctl_, "=<more>");
  }

  // Forgets the watches of a folder and everything below it.
  void unwatch_subtree(const std::string& dir) {
    auto it = wd_by_path_.lower_bound(dir);
    while (it != wd_by_path_.end() && within(it->first, dir)) {
      ::inotify_rm_watch(inotify_.native_handle(), it->second);  // may already be gone: fine
      const int wd = it->second;
      it = wd_by_path_.erase(it);  // before the node: its key is a view of the node's path
      nodes_.erase(wd);
    }
  }

  // ---- task queue ---------------------------------------------------------------

  void enqueue(task t) {
    if (t.kind == task::scan_job) {
      if (auto it = jobs_.find(t.job); it != jobs_.end()) {
        it->second.scanning = true;
        for (auto& [rel, r] : it->second.candidates) r.seen_in_scan = false;
      }
    }
    tasks_.push_back(std::move(t));
    schedule_pump();
  }

  void schedule_pump() {
    if (pump_scheduled_ || stopped_) return;
    pump_scheduled_ = true;
    net::post(ctx_, [this] {
      pump_scheduled_ = false;
      pump();
    });
  }

  void pump() {
    if (stopped_) return;
    for (int i = 0; i < tasks_per_turn && !tasks_.empty(); ++i) {
      look_ahead();  // may run scans itself, even the last task queued
      if (tasks_.empty()) break;
      run(tasks_.pop_front());
    }
    flush();
    if (!tasks_.empty()) {
      schedule_pump();
    } else {
      // Every candidate a scan queued has been judged (and watched) or
      // dropped with its job.
      unwatched_.clear();
    }
  }

  void run(const task& t) {
    switch (t.kind) {
      case task::scan_job:
        scan_job(t.job);
        break;
      case task::scan_dir:
        scan_dir(t.job, t.path, t.depth);
        break;
      case task::evaluate:
        evaluate(t.job, t.path);
        break;
      case task::finish_job:
        finish_job(t.job);
        break;
      case task::reconciled:
        if (!reconciled_) {
          reconciled_ = true;
          flush();
          log::notice("first scan reconciled: ", jobs_.size(), " jobs, ", nodes_.size(),
                      " folders watched");
          if (cb_.on_reconciled) cb_.on_reconciled();
        }
        break;
    }
  }

  void scan_job(const std::string& uuid) {
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) return;
    auto& js = it->second;
    js.incomplete_watch = false;
    if (int error = hidden_by(js.dir)) {
      // Unknown, not empty: finish_job keeps every checkpoint it cannot see.
      note_unreadable(js.dir, error);
      finish_job(uuid);
      return;
    }
    if (!is_dir_nofollow(js.dir)) {
      if (!js.root.empty()) {
        // A --watch job whose folder is gone: the root's event removes it.
        log::debug("job folder ", js.dir, " vanished during its scan");
      } else {
        note_problem(js.dir, "job folder of job " + uuid + " does not exist (yet)");
      }
      finish_job(uuid);
      return;
    }
    if (!watch_dir(js.dir, uuid, 0)) js.incomplete_watch = true;
    js.opened.clear();
    // Depth-first: the job's folders are listed before its scan finishes.
    tasks_.push_front({task::finish_job, uuid, "", 0});
    tasks_.push_front({task::scan_dir, uuid, js.dir, 0});
  }

  // Lists one folder of a job: queues its subfolders and judges candidates.
  void scan_dir(const std::string& job, const std::string& dir, int depth) {
    int error = 0;
    auto entries = list_dir(dir, error);
    if (is_unknown_error(error)) {
      note_unreadable(dir, error);  // what it held stays: see evaluate()
    } else if (error == 0) {
      note_readable(dir);
    }
    // In name order: the checkpoint keys a scan writes then come in key
    // order, which RocksDB's memtable inserts fastest (next to the last).
    std::sort(entries.begin(), entries.end(),
              [](const dir_entry& a, const dir_entry& b) { return a.name < b.name; });
    std::vector<task> next;
    if (depth > 0 && has_manifest(entries)) {
      // Already watched (before this listing); judging watches its inside.
      next.push_back({task::evaluate, job, dir, 0});
    } else {
      for (auto& e : entries) {
        if (is_staging_name(e.name) || (e.name.front() == '.' && e.is_dir)) continue;
        std::string path = dir + "/" + e.name;
        if (claimed_by_name(e.name, e.is_dir)) {
          if (depth + 1 > opts_.max_depth) continue;
          // Only the folder itself: judging lists it anyway, and watches
          // what is inside then (watch_new_interior). With workers, the
          // worker that looks at it ahead watches it (see unwatched_).
          if (e.is_dir && looked_at_ahead(job)) {
            unwatched_.insert(path);
          } else if (e.is_dir) {
            watch_dir(path, job, depth + 1);
          }
          next.push_back({task::evaluate, job, path, 0});
        } else if (e.is_dir && depth + 1 <= opts_.max_depth) {
          // Watch first, list later (when the task runs): nothing slips between.
          watch_dir(path, job, depth + 1);
          next.push_back({task::scan_dir, job, path, depth + 1});
        }
      }
    }
    // Depth-first keeps the queue as small as the tree is deep.
    tasks_.push_front(std::move(next));
  }

  static bool has_manifest(const std::vector<dir_entry>& entries) {
    return std::any_of(entries.begin(), entries.end(),
                       [](const dir_entry& e) { return !e.is_dir && e.name == manifest_file; });
  }

  static bool sibling_watched(std::string_view name) {
    for (const layout* l : all_layouts()) {
      if (l->watches_sibling(name)) return true;
    }
    return false;
  }

  static bool claimed_by_name(std::string_view name, bool is_dir) {
    return claim_of(name, is_dir) != claim::none;
  }

  // Watches a checkpoint folder and the folders inside it, before it is read,
  // so a file landing meanwhile raises an event.
  void watch_candidate_interior(const std::string& job, const std::string& dir, int depth) {
    if (auto it = jobs_.find(job); it != jobs_.end() && it->second.how.polled) return;
    watch_dir(dir, job, depth);
    std::vector<std::pair<std::string, int>> stack{{dir, 0}};
    while (!stack.empty()) {
      auto [path, level] = stack.back();
      stack.pop_back();
      if (level >= candidate_inner_depth) continue;
      int error = 0;
      for (auto& e : list_dir(path, error)) {
        if (!e.is_dir) continue;
        std::string sub = path + "/" + e.name;
        if (watch_dir(sub, job, depth + level + 1)) stack.emplace_back(sub, level + 1);
      }
    }
  }

  // Watches the folders inside a candidate folder that its listing shows and
  // that are not watched yet. True when it added any: the caller lists again,
  // since those folders were listed before their watches existed.
  bool watch_new_interior(const job_state& js, const std::string& candidate,
                          const std::vector<std::string>& folders) {
    if (js.how.polled || folders.empty() || !within(candidate, js.dir)) return false;
    const auto below_job = std::string_view(candidate).substr(js.dir.size());
    const int depth = static_cast<int>(std::count(below_job.begin(), below_job.end(), '/'));
    bool added = false;
    for (const auto& rel : folders) {
      std::string sub = candidate + "/" + rel;
      if (wd_by_path_.contains(sub)) continue;
      const int level = 1 + static_cast<int>(std::count(rel.begin(), rel.end(), '/'));
      added = watch_dir(sub, js.uuid, depth + level) || added;
    }
    return added;
  }

  // A job's scan is done: whatever the index holds that the scan did not
  // confirm is judged again on its own (it is most likely gone).
  void finish_job(const std::string& uuid) {
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) return;
    auto& js = it->second;
    js.scanning = false;
    if (js.found_in_scan > 0) {
      log::info("job ", uuid, ": ", js.found_in_scan, " complete checkpoint",
                js.found_in_scan == 1 ? "" : "s", " found by a scan of ", js.dir);
      js.found_in_scan = 0;
    }
    status_due_.insert(uuid);
    std::vector<std::string> unconfirmed;
    for (auto& [rel, r] : js.candidates) {
      if (r.indexed && !r.seen_in_scan) unconfirmed.push_back(js.dir + "/" + rel);
    }
    for (auto& path : unconfirmed) evaluate(uuid, path);
    if (js.how.polled) arm_job_poll(uuid);
  }

  // A polled job is walked again every interval: the same scan as at start,
  // where unchanged listings cost no reads (see memo).
  void arm_job_poll(const std::string& uuid) {
    auto& js = jobs_.at(uuid);
    if (!js.poll_timer) js.poll_timer = std::make_shared<net::steady_timer>(ctx_);
    js.poll_timer->expires_after(js.how.interval);
    js.poll_timer->async_wait([this, uuid](boost::system::error_code ec) {
      if (ec || stopped_) return;
      auto it = jobs_.find(uuid);
      if (it == jobs_.end() || it->second.scanning) return;
      enqueue({task::scan_job, uuid, it->second.dir, 0});
    });
  }

  // ---- judging candidates ---------------------------------------------------

  // Judges one candidate from the disk and records the outcome in pending_.
  void evaluate(const std::string& uuid, const std::string& path) {
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) return;
    auto& js = it->second;
    // Taken first, so that no look outlives the task it was taken for.
    std::optional<look> ahead = take_look_ahead(path);
    if (!within(path, js.dir) || path.size() == js.dir.size()) return;
    const std::string rel = path.substr(js.dir.size() + 1);

    std::uint64_t listing = 0;
    auto judged = judge(js, path, rel, listing, std::move(ahead));
    if (!judged) return;  // judged complete from this very listing before: indexed as it is
    auto& verdict = *judged;
    open_if_not_its_layouts(js, path, verdict.verdict);
    if (verdict.verdict == state::settling) {
      if (!settled(path, verdict)) return;  // judged again when its quiet time is over
      verdict.verdict = state::complete;
    } else {
      forget_settling(path);
    }

    if (verdict.verdict != state::complete) {
      if (!verdict.problem.empty()) note_problem(path, verdict.problem);
      if (auto r = js.candidates.find(rel); r != js.candidates.end()) {
        if (r->second.indexed) {
          if (int error = hidden_by(path)) {
            // Not gone, only out of sight (a folder above lost its permission):
            // kept as indexed until it can be judged again.
            note_unreadable(path, error);
            return;
          }
          unindex(js, rel, r->second);
        }
        if (!r->second.judged) js.candidates.erase(r);  // gone from the disk
      }
      return;
    }
    if (!verdict.problem.empty()) note_problem(path, verdict.problem);

    store::checkpoint cp;
    cp.path = path;
    cp.identifier = verdict.identifier.empty() ? std::string(name_of(path)) : verdict.identifier;
    cp.epoch = verdict.epoch;
    cp.step = verdict.step;
    cp.created_at_ns = verdict.completed_at_ns;
    cp.metrics = verdict.metrics;
    cp.fingerprint = verdict.fingerprint;
    cp.listing_hash = listing;
    auto& r = js.candidates[rel];
    r.verdict = state::complete;
    bool fresh = true;
    if (r.indexed) {
      // Unchanged evidence of completion: the same checkpoint, keep its time.
      if (r.fingerprint_hash == fingerprint_hash_of(cp)) {
        cp.created_at_ns = r.created_at_ns;
        fresh = false;
      }
      if (r.content_hash == content_hash_of(cp)) return;
    } else if (js.scanning) {
      // A scan finds them by the hundred: one line per job (finish_job).
      ++js.found_in_scan;
      log::debug("checkpoint ", path, " of job ", uuid, " is complete (epoch ", cp.epoch, ")");
    } else {
      log::info("checkpoint ", path, " of job ", uuid, " is complete (epoch ", cp.epoch, ")");
    }
    if (fresh) {
      pending_for(uuid).events.push_back(created_event(uuid, cp));
      if (events_seen_at_) completion_seen_.try_emplace(uuid, *events_seen_at_);
    }
    if (verdict.problem.empty()) problems_logged_.erase(path);
    remember_indexed(r, cp);
    pending_for(uuid).upserts.push_back(std::move(cp));
  }

  // A weakly claimed folder that its layout does not find its own is
  // searched inside like a plain folder (search_inside in layouts.cpp has the
  // rule): "<job>/0/checkpoint-100/" under Hydra's multirun "0/".
  void open_if_not_its_layouts(job_state& js, const std::string& path, state verdict) {
    const auto c = claim_of(name_of(path), /*is_dir=*/true);
    if (c != claim::weak || !is_dir_nofollow(path)) return;
    if (!search_inside(c, verdict)) {
      js.opened.erase(path);
      return;
    }
    if (!js.opened.insert(path).second) return;
    const int depth = depth_in_job(js, path);
    if (depth < 1 || depth > opts_.max_depth) return;
    tasks_.push_front({task::scan_dir, js.uuid, path, depth});
    schedule_pump();
  }

  // Folder levels from the job folder down to `path` (the job folder is 0).
  static int depth_in_job(const job_state& js, const std::string& path) {
    if (!within(path, js.dir)) return -1;
    return static_cast<int>(
        std::count(path.begin() + static_cast<std::ptrdiff_t>(js.dir.size()), path.end(), '/'));
  }

  // Whether workers look at this job's candidates ahead of the engine (see
  // look_ahead), and so also watch them (see unwatched_): with workers, in
  // inotify mode.
  bool looked_at_ahead(const std::string& job) const {
    if (!pool_) return false;
    const auto it = jobs_.find(job);
    return it != jobs_.end() && !it->second.how.polled;
  }

  // Records the watch a worker added before its look, and replays the events
  // it raised meanwhile. A candidate gone by then loses its watch again.
  void took_watch_ahead(job_state& js, const std::string& path, const look& seen) {
    unwatched_.erase(path);
    if (seen.gone) {
      if (seen.wd >= 0) ::inotify_rm_watch(inotify_.native_handle(), seen.wd);
      return;
    }
    if (!took_watch(path, js.uuid, depth_in_job(js, path), seen.wd, seen.watch_error)) return;
    std::vector<std::string> replay;
    for (auto it = orphans_.begin(); it != orphans_.end();) {
      if (reinterpret_cast<const inotify_event*>(it->data())->wd == seen.wd) {
        replay.push_back(std::move(*it));
        it = orphans_.erase(it);
      } else {
        ++it;
      }
    }
    if (replay.empty()) return;
    for (const auto& raw : replay) handle(*reinterpret_cast<const inotify_event*>(raw.data()));
    // As after a drain of the kernel's queue: judge what those events touched.
    net::post(ctx_, [this] {
      if (stopped_) return;
      judge_dirty();
      flush();
    });
  }

  // Takes a look at a candidate. The layout's verdict is asked for only with
  // `judge_unless`, and then unless the listing hashes to it: judge() then
  // mostly keeps what it knows (a memo, the index's record) and otherwise
  // asks the layout itself.
  static look look_at(const std::string& path, listing_end listings_end,
                      std::optional<std::uint64_t> judge_unless, bool keep_view,
                      int inotify_fd = -1) {
    look out;
    if (inotify_fd >= 0) {
      // Watch first, list second, as everywhere: nothing slips between.
      out.watched = true;
      out.wd = ::inotify_add_watch(inotify_fd, path.c_str(), dir_mask);
      if (out.wd < 0) out.watch_error = errno;
    }
    auto view = view_from_disk(path, candidate_inner_depth, listings_end);
    if (!view) return out;
    out.gone = false;
    out.listing = listing_hash(path, *view);
    std::vector<std::string> children;
    for (const auto& f : view->files()) {
      if (!f.rel.empty() && f.rel.find('/') == std::string::npos) children.push_back(f.rel);
      if (f.is_dir && !f.rel.empty()) out.folders.push_back(f.rel);
    }
    out.owner = choose_layout(view->name(), view->is_dir(), children);
    if (out.owner != nullptr && judge_unless &&
        (out.listing != *judge_unless || out.owner->reads_beside())) {
      out.verdict = out.owner->recognise(*view);
    }
    if (keep_view) out.view = std::move(view);
    return out;
  }

  // Hands the candidates of the evaluate tasks at the front of the queue to
  // the worker threads, which list and read them while the engine runs what
  // comes before. A look goes to the next evaluate() of its path, which is
  // never earlier than the task it was taken for, and anything that changes
  // after it was taken raises an inotify event (a candidate is watched before
  // its task is queued, and folders inside it before its look is used: see
  // watch_new_interior), so a later evaluate() sees the change. Polled jobs
  // get no events and have a shortcut of their own (listing_by_names): they
  // are judged inline.
  void look_ahead() {
    while (!handed_.empty() &&
           handed_.front()->phase.load(std::memory_order_relaxed) != look_slot::pending) {
      handed_.pop_front();
    }
    if (!pool_ || looks_.size() >= looks_ahead / 2) return;
    if (looks_.empty()) {
      // Every look taken ahead has been used, its watch recorded: events of
      // unknown watches kept until now belong to watches already gone.
      handed_.clear();
      orphans_.clear();
      if (std::exchange(orphans_overflowed_, false)) rescan_all();
    }
    std::vector<std::shared_ptr<look_slot>> handover;
    std::size_t i = tasks_.visited();
    for (std::size_t visits = 0; i < tasks_.size(); ++i) {
      if (looks_.size() >= looks_ahead || ++visits > 2 * looks_ahead) break;
      const task& t = tasks_[i];
      if (t.kind == task::scan_job || t.kind == task::scan_dir) {
        // Listed now rather than when the candidates before it are judged:
        // the workers go on to its candidates instead of idling at every
        // job's end. Each job's tasks keep their order, and jobs are
        // independent of one another. Not a polled job's: its candidates
        // get no looks, so nothing would bound how many jobs are listed
        // ahead (the queue would grow to every candidate of the tree).
        if (looked_at_ahead(t.job)) {
          tasks_.run_in_place(i--, [this](const task& scan) { run(scan); });
        }
        continue;
      }
      if (t.kind != task::evaluate || looks_.contains(t.path)) continue;
      const auto it = jobs_.find(t.job);
      if (it == jobs_.end() || it->second.how.polled) continue;
      const job_state& js = it->second;
      if (!within(t.path, js.dir) || t.path.size() == js.dir.size()) continue;
      auto slot = std::make_shared<look_slot>();
      slot->path = t.path;
      slot->listings_end = js.how.listings_end;
      if (unwatched_.contains(t.path)) slot->inotify_fd = inotify_.native_handle();
      // A listing the engine already knows needs no verdict (see judge).
      if (auto r = js.candidates.find(t.path.substr(js.dir.size() + 1));
          r != js.candidates.end() && (r->second.judged || r->second.indexed)) {
        slot->known_listing = r->second.listing_hash;
      }
      looks_.emplace(t.path, slot);
      handed_.push_back(slot);
      handover.push_back(std::move(slot));
      if (handover.size() == looks_per_handover) hand_over(std::exchange(handover, {}));
    }
    tasks_.set_visited(i);
    if (!handover.empty()) hand_over(std::move(handover));
  }

  void hand_over(std::vector<std::shared_ptr<look_slot>> slots) {
    pool_->post([slots = std::move(slots)] {
      for (const auto& slot : slots) take_if_pending(*slot);  // else the engine got there first
    });
  }

  // Takes the look unless someone else has; on a worker or on the engine.
  static bool take_if_pending(look_slot& slot) {
    int expected = look_slot::pending;
    if (!slot.phase.compare_exchange_strong(expected, look_slot::taken, std::memory_order_acq_rel))
      return false;
    try {
      slot.result = look_at(slot.path, slot.listings_end, slot.known_listing,
                            /*keep_view=*/false, slot.inotify_fd);
    } catch (const std::exception& e) {
      log::debug("looking at ", slot.path, " ahead failed (", e.what(), ")");
    }
    slot.phase.store(look_slot::done, std::memory_order_release);
    slot.phase.notify_one();
    return true;
  }

  // Takes the next look no one has started, for a later evaluate(); false
  // when every look handed over is taken.
  bool take_next_pending() {
    while (!handed_.empty()) {
      const auto slot = std::move(handed_.front());
      handed_.pop_front();
      if (take_if_pending(*slot)) return true;
    }
    return false;
  }

  // The look taken ahead at `path`, waiting for the worker taking it; nullopt
  // when none was taken (no worker had started on it: the engine looks
  // itself, which is sooner) or it failed.
  std::optional<look> take_look_ahead(const std::string& path) {
    const auto it = looks_.find(path);
    if (it == looks_.end()) return std::nullopt;
    const auto slot = std::move(it->second);
    looks_.erase(it);
    int phase = look_slot::pending;
    if (slot->phase.compare_exchange_strong(phase, look_slot::taken, std::memory_order_acq_rel))
      return std::nullopt;
    // A worker is on it: rather than wait, the engine takes looks further
    // ahead, which the workers would otherwise take after this one.
    while (phase != look_slot::done) {
      if (!take_next_pending()) slot->phase.wait(phase, std::memory_order_acquire);
      phase = slot->phase.load(std::memory_order_acquire);
    }
    return std::move(slot->result);
  }

  // The layout's verdict on a candidate; nullopt when it was judged complete
  // from the same listing before (no file is read then: its record in the
  // index stands), and an incomplete verdict at once when it was judged
  // incomplete from the same listing. `listing` receives the hash of the
  // listing judged. `ahead`: a look taken ahead by a worker (look_ahead).
  std::optional<recognition> judge(job_state& js, const std::string& path, const std::string& rel,
                                   std::uint64_t& listing, std::optional<look> ahead) {
    if (js.scanning) js.candidates[rel].seen_in_scan = true;
    if (js.how.polled) {
      // The folder's mtime must be read before its listing (below).
      ahead.reset();
      auto& known = js.candidates[rel];
      if (known.judged && listing_by_names(path, known) == known.listing_hash) {
        listing = known.listing_hash;
        if (known.verdict == state::incomplete) return recognition{};
        if (known.verdict == state::complete && known.indexed) return std::nullopt;
      }
    }
    // Taken before the listing: a change while it is read then shows next time.
    const std::int64_t folder_mtime = js.how.polled ? trusted_folder_mtime(path) : 0;
    look seen;
    if (ahead) {
      seen = std::move(*ahead);
      if (seen.watched) took_watch_ahead(js, path, seen);
    } else {
      if (unwatched_.erase(path) > 0) watch_dir(path, js.uuid, depth_in_job(js, path));
      seen = look_at(path, js.how.listings_end, std::nullopt, /*keep_view=*/true);
    }
    if (!seen.gone && watch_new_interior(js, path, seen.folders)) {
      // Files that landed in those folders before their watches existed.
      seen = look_at(path, js.how.listings_end, std::nullopt, /*keep_view=*/true);
    }
    auto& r = js.candidates[rel];
    if (seen.gone) {
      r.judged = false;  // gone: evaluate forgets it
      return recognition{};
    }
    listing = seen.listing;
    if (seen.view) {
      remember_names(r, *seen.view, folder_mtime);
    } else {
      r.flat.reset();  // a look taken ahead: never of a polled job
    }
    if (r.judged && r.listing_hash == listing) {
      if (r.verdict == state::incomplete) return recognition{};
      if (r.verdict == state::complete && r.indexed) return std::nullopt;
    }
    const layout* l = seen.owner;
    if (l != nullptr && !seen.verdict && !seen.view &&
        !(!r.judged && r.indexed && r.listing_hash == listing && !l->reads_beside())) {
      // Taken ahead without a verdict, for a candidate the engine has learnt
      // more of since: look again, here.
      return judge(js, path, rel, listing, std::nullopt);
    }
    // First look since a restart: the index remembers the listing its record
    // was judged from. The same listing (names, sizes, mtimes, sibling inputs)
    // means the same files, so the record stands, created_at and metrics
    // included; a checkpoint rewritten in place changes its listing and is
    // read again.
    const bool same_as_indexed = !r.judged && r.indexed && r.listing_hash == listing;
    r.judged = true;
    r.listing_hash = listing;
    if (same_as_indexed && l != nullptr && !l->reads_beside()) {
      r.verdict = state::complete;
      return std::nullopt;
    }
    recognition verdict = l == nullptr  ? recognition{}
                          : seen.verdict ? std::move(*seen.verdict)
                                         : l->recognise(*seen.view);  // kept: see above
    r.verdict = verdict.verdict;
    return verdict;
  }

  // ---- polling: folders whose names did not change ---------------------------
  //
  // A folder's mtime moves when an entry is added, removed or renamed in it,
  // not when a file inside is rewritten. So while a polled candidate folder
  // keeps its mtime, it holds the names it held, and its listing is rebuilt
  // by stat-ing those names, without opening and reading the folder. Only
  // flat folders (regular files only) are remembered this way: a subfolder's
  // changes do not move the candidate's mtime.

  // The folder's mtime, or 0 when it is too recent to rely on: an entry added
  // within the filesystem's timestamp granularity of the last change may
  // leave the mtime as it was (the "racy git" problem).
  static std::int64_t trusted_folder_mtime(const std::string& path) {
    constexpr std::int64_t racy_window_ns = 2'000'000'000;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    const std::int64_t mtime = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
    return now_ns() - mtime > racy_window_ns ? mtime : 0;
  }

  static void remember_names(candidate_record& r, const candidate_view& view,
                             std::int64_t folder_mtime) {
    r.flat.reset();
    if (folder_mtime == 0 || !view.is_dir()) return;
    auto flat = std::make_unique<flat_folder>();
    for (const auto& f : view.files()) {
      if (f.is_dir) return;
      flat->names.append(f.rel).push_back('\0');
    }
    flat->names.shrink_to_fit();
    flat->mtime_ns = folder_mtime;
    r.flat = std::move(flat);
  }

  // The listing hash of a remembered flat folder whose mtime has not moved,
  // from a stat of each name; 0 when that does not apply (then the folder is
  // listed).
  static std::uint64_t listing_by_names(const std::string& path, const candidate_record& r) {
    if (!r.flat) return 0;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) ||
        st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec != r.flat->mtime_ns)
      return 0;
    const std::string& names = r.flat->names;
    std::vector<file_info> files;
    for (std::size_t at = 0; at < names.size();) {
      const std::size_t end = names.find('\0', at);
      std::string name = names.substr(at, end - at);
      at = end + 1;
      if (::lstat((path + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
      files.push_back(file_info{std::move(name), false, static_cast<std::uint64_t>(st.st_size),
                                st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec});
    }
    return listing_hash(path, /*is_dir=*/true, files);
  }

  // A hash of everything the judgement of a candidate rests on: the names,
  // kinds, sizes and mtimes of everything in its view, and the files beside it
  // that a layout claiming it reads (layout::sibling_inputs: DeepSpeed's
  // "latest", Megatron's tracker, NeMo's "-unfinished" marker), whose change
  // alone must invalidate the memo, in inotify and in polling mode alike.
  static std::uint64_t listing_hash(const std::string& path, const candidate_view& view) {
    return listing_hash(path, view.is_dir(), view.files());
  }

  static std::uint64_t listing_hash(const std::string& path, bool is_dir,
                                    const std::vector<file_info>& files) {
    fingerprint_hash hash;
    // The hash is kept in the index across restarts (see judge): a build
    // whose layouts judge differently must not trust verdicts of an older one.
    hash.add(judging_rules_version);
    for (const auto& f : files) {
      hash.add(f);
      hash.add(std::uint64_t{f.is_dir});
    }
    const std::string parent = parent_of(path);
    const std::string_view name = name_of(path);
    for (const layout* l : all_layouts()) {
      if (!l->claims_name(name, is_dir)) continue;
      for (const auto& sibling : l->sibling_inputs(name, is_dir)) {
        struct stat st {};
        const bool present = ::lstat((parent + "/" + sibling).c_str(), &st) == 0;
        hash.add(sibling);
        hash.add(std::uint64_t{present});
        if (present) {
          hash.add(static_cast<std::uint64_t>(st.st_size));
          hash.add(
              static_cast<std::uint64_t>(st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec));
        }
      }
    }
    return hash.value();
  }

  // Quiet-time rule for layouts without a completion marker: complete once
  // nothing under the candidate was written (newest mtime) and no event was
  // seen for settle_time, and its size/mtime fingerprint held still between
  // two looks. After a restart, files untouched for long are complete at once.
  bool settled(const std::string& path, const recognition& verdict) {
    auto& s = settling_[path];
    auto now = clock::now();
    bool first = !s.timer;
    if (first) {
      s.timer = std::make_unique<net::steady_timer>(ctx_);
      s.last_activity = clock::time_point::min();
    } else if (s.size_signature != verdict.fingerprint) {
      s.last_activity = now;
    }
    s.size_signature = verdict.fingerprint;

    std::int64_t wall_age_ns = now_ns() - verdict.completed_at_ns;
    if (wall_age_ns < 0 && first) s.last_activity = now;  // mtime in the future: trust only events
    auto since_write = std::chrono::nanoseconds(std::max<std::int64_t>(0, wall_age_ns));
    auto since_event = s.last_activity == clock::time_point::min()
                           ? clock::duration::max()
                           : clock::duration(now - s.last_activity);
    auto quiet =
        std::min<clock::duration>(since_event, wall_age_ns < 0 ? since_event : since_write);
    if (quiet >= opts_.settle_time) {
      forget_settling(path);
      return true;
    }
    s.timer->expires_after(opts_.settle_time - quiet + std::chrono::milliseconds(5));
    s.timer->async_wait([this, job = job_of(path), path](boost::system::error_code ec) {
      if (ec || stopped_) return;
      evaluate(job, path);
      flush();
    });
    return false;
  }

  void note_activity(const std::string& candidate) {
    if (auto it = settling_.find(candidate); it != settling_.end()) {
      it->second.last_activity = clock::now();
    }
  }

  void forget_settling(const std::string& path) {
    auto it = settling_.lower_bound(path);
    while (it != settling_.end() && within(it->first, path)) {
      if (it->second.timer) it->second.timer->cancel();
      it = settling_.erase(it);
    }
  }

  std::string job_of(const std::string& path) const {
    for (auto& [uuid, js] : jobs_) {
      if (within(path, js.dir)) return uuid;
    }
    return {};
  }

  // One log line per candidate and problem, not one per event.
  std::map<std::string, std::string> problems_logged_;
  void note_problem(const std::string& path, const std::string& problem) {
    auto& last = problems_logged_[path];
    if (last == problem) return;
    last = problem;
    log::warning(path, ": ", problem);
  }

  store::job_change& pending_for(const std::string& uuid) {
    auto& change = pending_[uuid];
    change.job_uuid = uuid;
    return change;
  }

  bool is_scanning(const std::string& uuid) const {
    auto it = jobs_.find(uuid);
    return it != jobs_.end() && it->second.scanning;
  }

  // Writes every pending change (one batch per job), then tells the listener.
  // A job being scanned is written as its scan goes but announced once, when
  // the scan is done: the listener re-reads and re-serializes the whole job,
  // so announcing it after every turn of a scan would cost quadratic time in
  // the job's size. Its status is judged once at the end too (finish_job).
  // While the index cannot be written (see index_outage_), changes are held
  // back instead: the job is remembered in unwritten_, and
  // write_held_back_changes() brings the index up to date once writes work.
  void flush() {
    for (auto& [uuid, change] : pending_) {
      if (!change.remove_job && !is_scanning(uuid)) status_due_.insert(uuid);
    }
    for (auto& uuid : std::exchange(status_due_, {})) {
      if (auto it = jobs_.find(uuid); it != jobs_.end()) refresh_status(it->second);
    }
    write_pending();
    announce_changed_jobs();
    metrics::watches.set(static_cast<double>(nodes_.size()));
  }

  void write_pending() {
    if (pending_.empty()) return;
    auto pending = std::exchange(pending_, {});
    auto seen = std::exchange(completion_seen_, {});
    for (auto& [uuid, change] : pending) {
      if (is_empty(change)) continue;
      if (index_outage_ || !write(change)) {
        hold_back(uuid);
        continue;
      }
      if (auto at = seen.find(uuid); at != seen.end()) {
        metrics::ingest_latency.observe(
            std::chrono::duration<double>(clock::now() - at->second).count());
      }
      unannounced_.insert(uuid);
    }
  }

  // Tells the listener of every written job whose scan is not under way.
  void announce_changed_jobs() {
    for (auto it = unannounced_.begin(); it != unannounced_.end();) {
      if (is_scanning(*it)) {
        ++it;
        continue;
      }
      const std::string uuid = *it;
      it = unannounced_.erase(it);
      if (cb_.on_job_changed) cb_.on_job_changed(uuid);
    }
  }

  // Tells the listener when the index's health moved since the last write.
  void report_index_health() {
    const bool healthy = index_.healthy();
    if (healthy == index_healthy_) return;
    index_healthy_ = healthy;
    if (cb_.on_index_health) cb_.on_index_health(healthy);
  }

  static bool is_empty(const store::job_change& c) {
    return c.upserts.empty() && c.removed_paths.empty() && !c.upsert_job && !c.remove_job &&
           c.events.empty();
  }

  // Applies one change; the job is announced by announce_changed_jobs. A
  // failure starts an outage.
  bool write(const store::job_change& change) {
    auto applied = index_.apply(change);
    report_index_health();
    if (!applied) {
      metrics::index_write_failures.inc();
      if (applied.error() == store::errc::invalid_argument) {
        // A bug, not an outage: retrying cannot help, and must not block the rest.
        log::error("the index refused a change to job ", change.job_uuid, ": ",
                   applied.error().message());
        return true;
      }
      metrics::index_healthy.set(0);  // again, should a retry of another job have succeeded
      if (!index_outage_) begin_index_outage(change.job_uuid, applied.error().message());
      return false;
    }
    metrics::index_healthy.set(1);
    unannounced_.insert(change.job_uuid);
    return true;
  }

  // One log line per outage, however many changes it holds back: a full
  // volume would otherwise log every checkpoint of every rescan.
  void begin_index_outage(const std::string& uuid, const std::string& why) {
    index_outage_ = true;
    log::error("cannot write job ", uuid, " to the index (", why,
               "): serving what is indexed; changes are held back and written once it "
               "works again (tried every ",
               opts_.rescan_interval.count() / 1000.0, " s)");
  }

  void hold_back(const std::string& uuid) {
    unwritten_.insert(uuid);
    metrics::index_changes_held_back.inc();
  }

  // Retries held-back jobs. Each job's record (or its removal) is written
  // first; then the watcher believes the index again about the job's
  // checkpoints and scans the job anew, which writes what the index lacks and
  // removes what the disk no longer holds. Checkpoints whose listing matches
  // the hash the index keeps are not read again, and intermediate states (a
  // checkpoint created and deleted during the outage) leave no events.
  void write_held_back_changes() {
    if (!index_outage_) return;
    flush();  // anything pending joins the held-back jobs first
    // Not before the index takes writes again (a flush reopens it and syncs
    // its log): rescanning a job against an index that cannot take it would
    // judge, and log, every held-back checkpoint again at each try.
    if (!index_.flush()) return;
    while (!unwritten_.empty()) {
      const std::string uuid = *unwritten_.begin();
      auto change = catch_up_change(uuid);
      if (!change) return;  // the index cannot be read: the next round tries again
      if (!is_empty(*change) && !write(*change)) return;
      unwritten_.erase(uuid);
      if (auto it = jobs_.find(uuid); it != jobs_.end()) {
        it->second.candidates.clear();
        load_indexed(it->second);
        enqueue({task::scan_job, uuid, it->second.dir, 0});
      }
    }
    announce_changed_jobs();
    index_outage_ = false;
    log::notice("the index is writable again; what was held back is being written");
  }

  // The change that brings the index's record of job `uuid` (not its
  // checkpoints: see write_held_back_changes) to the watcher's; nullopt when
  // the index cannot be read.
  std::optional<store::job_change> catch_up_change(const std::string& uuid) {
    auto stored_job = index_.find_job(uuid);
    if (!stored_job) return std::nullopt;
    store::job_change change;
    change.job_uuid = uuid;
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) {
      // Removed while the index could not be written.
      auto stored = index_.checkpoints(uuid);
      if (!stored) return std::nullopt;
      if (!*stored_job && stored->empty()) return change;
      change.remove_job = true;
      for (auto& cp : *stored) change.events.push_back(deleted_event(uuid, cp.identifier, cp.path));
      return change;
    }
    const auto& js = it->second;
    if (!js.record.uuid.empty() && (!*stored_job || **stored_job != js.record)) {
      change.upsert_job = js.record;
      if (!*stored_job || (*stored_job)->status != js.record.status)
        change.events.push_back(status_event(uuid, js.record.status));
    }
    return change;
  }

  // Judges the job's status from its folder's top level (job_status.hpp) and
  // records a change, with a job.status event when the status itself moved.
  void refresh_status(job_state& js) {
    job_facts f;
    int error = 0;
    auto entries = list_dir(js.dir, error);
    if (is_unknown_error(error)) {
      note_unreadable(js.dir, error);
      return;  // an unreadable folder is not an empty one: the status stays
    }
    for (auto& e : entries) {
      const std::string path = js.dir + "/" + e.name;
      if (!e.is_dir && e.name == job_manifest_file) {
        f.manifest_mtime_ns = mtime_ns(path).value_or(0);
        f.manifest_status = parse_job_manifest(read_small_file(path));
        if (!f.manifest_status)
          note_problem(
              path, "not a job manifest: expected {\"status\": \"completed\"} or another status");
        continue;
      }
      f.has_other_content = true;
      std::optional<std::int64_t> final_at;
      if (!e.is_dir && (e.name == "train_results.json" || e.name == "all_results.json")) {
        final_at = mtime_ns(path);
      } else if (e.is_dir && (e.name == "merged_model" || e.name == "dpo_model")) {
        // The provider's final model: complete once its weights sit beside its config.
        if (exists_nofollow(path + "/config.json")) {
          for (const char* weights : {"model.safetensors", "model.safetensors.index.json",
                                      "pytorch_model.bin", "adapter_model.safetensors"}) {
            if (auto t = mtime_ns(path + "/" + weights))
              final_at = std::max(final_at.value_or(0), *t);
          }
        }
      }
      if (final_at)
        f.final_artifact_mtime_ns = std::max(f.final_artifact_mtime_ns.value_or(0), *final_at);
    }
    for (auto& [rel, r] : js.candidates) {
      if (!r.indexed) continue;
      f.has_checkpoints = true;
      if (f.earliest_checkpoint_ns == 0 || r.created_at_ns < f.earliest_checkpoint_ns)
        f.earliest_checkpoint_ns = r.created_at_ns;
    }
    f.birth_ns = birth_time_ns(js.dir);
    f.first_seen_ns = js.record.first_seen_ns;
    auto v = infer_job_status(f);
    auto& r = js.record;
    if (v.status == r.status && v.started_at_ns == r.started_at_ns &&
        v.completed_at_ns == r.completed_at_ns && r.dir == js.dir)
      return;
    auto& change = pending_for(js.uuid);
    if (v.status != r.status) {
      log::info("job ", js.uuid, " is ", v.status);
      change.events.push_back(status_event(js.uuid, v.status));
    }
    r.uuid = js.uuid;
    r.dir = js.dir;
    r.status = v.status;
    r.started_at_ns = v.started_at_ns;
    r.completed_at_ns = v.completed_at_ns;
    change.upsert_job = r;
  }

  // A small file's content (a manifest), read and closed at once; empty when
  // missing or larger than a manifest has reason to be.
  static std::string read_small_file(const std::string& path) {
    constexpr std::size_t max_manifest_bytes = 64 * 1024;
    std::string out;
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return out;
    out.resize(max_manifest_bytes + 1);
    ssize_t n = ::read(fd, out.data(), out.size());
    ::close(fd);
    out.resize(n > 0 && static_cast<std::size_t>(n) <= max_manifest_bytes
                   ? static_cast<std::size_t>(n)
                   : 0);
    return out;
  }

  // ---- inotify events ----------------------------------------------------------

  void read_events() {
    if (stopped_) return;
    inotify_.async_wait(net::posix::stream_descriptor::wait_read,
                        [this](boost::system::error_code ec) {
                          if (ec || stopped_) return;
                          drain();
                          read_events();
                        });
  }

  void drain() {
    events_seen_at_ = clock::now();
    for (;;) {
      ssize_t n = ::read(inotify_.native_handle(), buffer_.data(), buffer_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) log::error("reading inotify: ", std::strerror(errno));
        break;
      }
      for (ssize_t off = 0; off < n;) {
        auto* ev = reinterpret_cast<const inotify_event*>(buffer_.data() + off);
        handle(*ev);
        off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
      }
    }
    judge_dirty();
    events_seen_at_.reset();
    flush();
    schedule_pump();
  }

  // Judges each candidate that events marked since the last call, once.
  void judge_dirty() {
    for (auto& [job, path] : std::exchange(dirty_, {})) evaluate(job, path);
  }

  void handle(const inotify_event& ev) {
    if (ev.mask & IN_Q_OVERFLOW) {
      log::warning("inotify queue overflowed; rescanning every job");
      rescan_all();
      return;
    }
    auto it = nodes_.find(ev.wd);
    if (it == nodes_.end()) {
      // A watch dropped already, or one a worker added that is not recorded
      // yet: kept for the latter while looks are in flight.
      if (looks_.empty()) return;
      if (orphans_.size() >= max_orphans) {
        orphans_overflowed_ = true;
        return;
      }
      orphans_.emplace_back(reinterpret_cast<const char*>(&ev), sizeof(inotify_event) + ev.len);
      return;
    }
    if (ev.mask & IN_IGNORED) {
      forget_watch(ev.wd);
      return;
    }
    const node n = it->second;  // copy: handlers below may rehash nodes_
    std::string name = ev.len > 0 ? std::string(ev.name) : std::string();
    bool is_dir = ev.mask & IN_ISDIR;

    if (!n.job) {
      handle_root_event(n, ev.mask, name, is_dir);
      return;
    }
    const std::string& job = *n.job;
    if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
      if (n.depth == 0) on_job_dir_gone(job);
      return;
    }
    if (name.empty()) {
      if (ev.mask & IN_ATTRIB) on_attributes_changed(n.path);
      return;
    }
    if (n.depth == 0) status_due_.insert(job);
    std::string path = n.path + "/" + name;
    auto job_it = jobs_.find(job);
    if (job_it == jobs_.end()) return;
    auto& js = job_it->second;

    if (is_dir && (ev.mask & (IN_DELETE | IN_MOVED_FROM))) {
      unwatch_subtree(path);
      drop_known_under(job, path);
    }
    if (is_dir && (ev.mask & (IN_CREATE | IN_MOVED_TO)) && !is_staging_name(name)) {
      // Covered by scan_dir of the parent, in the right order: watch, then list.
      auto candidate = candidate_of(js, n.path, n.depth);
      if (candidate.empty()) {
        enqueue_front_scan(job, n.path, name, n.depth);
      } else {
        watch_candidate_interior(job, path, n.depth + 1);
      }
    }
    // A tag or marker file beside checkpoints ("latest", "-unfinished"):
    // every checkpoint of this folder may have completed or broken.
    // Any event below a candidate may complete it, change it or break it.
    std::string candidate = candidate_of(js, n.path, n.depth);
    if (candidate.empty() && !is_dir && sibling_watched(name)) {
      int error = 0;
      for (auto& e : list_dir(n.path, error)) {
        if (claimed_by_name(e.name, e.is_dir) && n.depth + 1 <= opts_.max_depth)
          dirty_.emplace(job, n.path + "/" + e.name);
      }
    }
    if (candidate.empty()) {
      if (claimed_by_name(name, is_dir) && n.depth + 1 <= opts_.max_depth)
        candidate = path;
      else if (name == manifest_file && n.depth > 0)
        candidate = n.path;
    }
    // A file landing directly in an opened folder ("0/commit_success.txt")
    // may make it its layout's checkpoint after all.
    if (js.opened.contains(n.path)) dirty_.emplace(job, n.path);
    if (!candidate.empty()) {
      // A trainer's running log beside its weights (torchtune's log/) is
      // written all epoch long; it says nothing about the weights being done.
      if (n.path != candidate + "/log") note_activity(candidate);
      dirty_.emplace(job, candidate);
    }
  }

  // Queues the scan of one new subfolder of `parent`, as scan_dir would have.
  void enqueue_front_scan(const std::string& job, const std::string& parent,
                          const std::string& name, int parent_depth) {
    std::string path = parent + "/" + name;
    if (claimed_by_name(name, true)) {
      if (parent_depth + 1 <= opts_.max_depth) {
        watch_candidate_interior(job, path, parent_depth + 1);
        dirty_.emplace(job, path);
      }
      return;
    }
    if (parent_depth + 1 > opts_.max_depth) return;
    watch_dir(path, job, parent_depth + 1);
    tasks_.push_front({task::scan_dir, job, path, parent_depth + 1});
  }

  // The checkpoint a folder belongs to: the outermost folder between the job
  // folder and `dir` that a layout claims by name (and that was not opened:
  // a weak claim its layout rejected) or that holds a manifest. Empty when
  // `dir` is not inside a checkpoint.
  std::string candidate_of(const job_state& js, const std::string& dir, int depth) const {
    if (depth <= 0) return {};
    std::vector<std::string> chain;  // dir, parent, ..., up to depth 1
    std::string p = dir;
    for (int d = depth; d >= 1; --d) {
      chain.push_back(p);
      p = parent_of(p);
    }
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      if (js.opened.contains(*it)) continue;  // a plain folder after all: look deeper
      if (claimed_by_name(name_of(*it), true)) return *it;
      if (exists_nofollow(*it + "/" + std::string(manifest_file))) return *it;
    }
    return {};
  }

  void drop_known_under(const std::string& uuid, const std::string& dir) {
    auto& js = jobs_[uuid];
    for (auto o = js.opened.lower_bound(dir); o != js.opened.end() && within(*o, dir);)
      o = js.opened.erase(o);
    if (within(dir, js.dir)) {
      // Records are keyed relative to the job folder; "" covers all of them.
      const std::string prefix = dir.size() == js.dir.size() ? "" : dir.substr(js.dir.size() + 1);
      auto it = js.candidates.lower_bound(prefix);
      while (it != js.candidates.end() && (prefix.empty() || within(it->first, prefix))) {
        if (it->second.indexed) unindex(js, it->first, it->second);
        it = js.candidates.erase(it);
      }
    }
    forget_settling(dir);
  }

  // A watch root vanished (deleted, moved away): its jobs go until it returns.
  void root_gone(const std::string& path) {
    for (auto& r : roots_) {
      if (r.path != path || !r.attached) continue;
      log::warning("watch root ", r.configured, " is gone; its jobs are dropped until it returns");
      detach_root(r);
    }
  }

  // Drops a root's jobs and watches; the rescan tick attaches it again.
  void detach_root(watch_root& r) {
    std::vector<std::string> gone;
    for (auto& [uuid, js] : jobs_) {
      if (js.root == r.path) gone.push_back(uuid);
    }
    for (auto& uuid : gone) remove_job(uuid);
    unwatch_subtree(r.path);
    r.wd = -1;
    r.attached = false;
  }

  // Whether the configured root now leads to another folder than the one
  // followed (a symlink put in its place, re-pointed, or replaced by the
  // real folder again): no inotify event says so, the parent is not watched.
  bool root_moved(const watch_root& r) const { return resolve(r.configured) != r.path; }

  void handle_root_event(const node& root, std::uint32_t mask, const std::string& name,
                         bool is_dir) {
    if (mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
      root_gone(root.path);
      return;
    }
    if (mask & IN_ATTRIB) {
      on_attributes_changed(name.empty() ? root.path : root.path + "/" + name);
      return;
    }
    if (!is_dir || !is_job_name(name)) return;
    std::string dir = root.path + "/" + name;
    if (mask & (IN_CREATE | IN_MOVED_TO)) {
      log::info("job ", name, " appeared at ", dir);
      add_job(name, dir, root.path, follow{});  // roots with events are not polled
    } else if (mask & (IN_DELETE | IN_MOVED_FROM)) {
      auto it = jobs_.find(name);
      if (it != jobs_.end() && it->second.dir == dir) remove_job(name);
    }
  }

  // A --job folder (or a job folder whose root event we missed) vanished.
  void on_job_dir_gone(const std::string& uuid) {
    auto it = jobs_.find(uuid);
    if (it == jobs_.end()) return;
    if (!it->second.root.empty()) {
      if (folder_gone(it->second.dir)) remove_job(uuid);
      return;
    }
    drop_known_under(uuid, it->second.dir);
    unwatch_subtree(it->second.dir);
    log::warning("job folder ", it->second.dir, " of job ", uuid, " is gone; waiting for it");
  }

  // ---- folders that cannot be read -------------------------------------------------

  // A listing or lookup that fails with anything but "does not exist"
  // (EACCES, EIO) says nothing about what the folder holds, so nothing under
  // it is dropped meanwhile (see evaluate, refresh_status, sync_root_jobs).
  // The folder is logged once, counted in ckptd_unreadable_folders, and
  // looked at again at every rescan tick and whenever its attributes change
  // (IN_ATTRIB: a chmod), so indexing resumes as soon as it can be read.
  void note_unreadable(const std::string& path, int error) {
    const std::string folder = outermost_hidden(path);
    if (!unreadable_.emplace(folder, error).second) return;
    metrics::unreadable_folders.set(static_cast<double>(unreadable_.size()));
    log::warning("cannot read ", folder, ": ", std::strerror(error),
                 "; keeping what is indexed below it, and looking again every ",
                 opts_.rescan_interval.count() / 1000.0, " s and when its permissions change");
  }

  // The folder to blame when `path` is hidden: the outermost one, from `path`
  // up, that cannot be looked into. One root losing its permission is one
  // entry and one log line, not one per job or checkpoint below it.
  static std::string outermost_hidden(const std::string& path) {
    std::string culprit = path;
    for (std::string p = parent_of(path); p != "/" && hidden_by(p) != 0; p = parent_of(p))
      culprit = p;
    return culprit;
  }

  // `path` could be listed: it and the folders above it are readable.
  void note_readable(const std::string& path) {
    if (unreadable_.empty()) return;
    for (auto it = unreadable_.begin(); it != unreadable_.end();) {
      if (!within(path, it->first)) {
        ++it;
        continue;
      }
      log::notice("can read ", it->first, " again");
      it = unreadable_.erase(it);
    }
    metrics::unreadable_folders.set(static_cast<double>(unreadable_.size()));
  }

  // Looks again at every unreadable folder; what can be read now (or is
  // gone) is rescanned, with the roots and jobs at or below it.
  void retry_unreadable() {
    std::vector<std::string> recovered;
    for (auto& [folder, error] : unreadable_) {
      if (hidden_by(folder) == 0) recovered.push_back(folder);
    }
    for (auto& folder : recovered) {
      unreadable_.erase(folder);
      log::notice("can read ", folder, " again; rescanning it");
      rescan_around(folder);
    }
    metrics::unreadable_folders.set(static_cast<double>(unreadable_.size()));
  }

  // Rescans the roots and jobs that hold `folder` or lie inside it.
  void rescan_around(const std::string& folder) {
    const auto related = [&](const std::string& dir) {
      return within(dir, folder) || within(folder, dir);
    };
    for (std::size_t i = 0; i < roots_.size(); ++i) {
      if (related(roots_[i].path)) rescan_root(i);
    }
    for (auto& [uuid, js] : jobs_) {
      if (related(js.dir) && !js.scanning) enqueue({task::scan_job, uuid, js.dir, 0});
    }
  }

  // IN_ATTRIB on a watched folder itself (or on a job folder, seen from its
  // root): its permissions may have been taken away or given back.
  void on_attributes_changed(const std::string& folder) {
    if (int error = hidden_by(folder)) {
      note_unreadable(folder, error);
    } else if (!unreadable_.empty()) {
      retry_unreadable();
    }
  }

  // ---- rescans -------------------------------------------------------------------

  void rescan_all() {
    metrics::rescans.inc();
    for (auto& [uuid, js] : jobs_) enqueue({task::scan_job, uuid, js.dir, 0});
    for (std::size_t i = 0; i < roots_.size(); ++i) rescan_root(i);
  }

  // Picks up jobs a root gained or lost without an event reaching us.
  void rescan_root(std::size_t i) {
    auto& r = roots_[i];
    if (root_moved(r)) {
      const std::string now = resolve(r.configured);
      log::notice("watch root ", r.configured, " now leads to ", now, "; following it there");
      if (r.attached) detach_root(r);
      r.path = now;
    }
    if (!r.attached) {
      if (folder_gone(r.path)) return;
      log::notice("watch root ", r.path, " is there; following it");
      attach_root(i);
      return;
    }
    if (r.how.polled && folder_gone(r.path)) {
      root_gone(r.path);
      return;
    }
    sync_root_jobs(r);
  }

  void arm_rescan_timer() {
    rescan_timer_.expires_after(opts_.rescan_interval);
    rescan_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec || stopped_) return;
      for (std::size_t i = 0; i < roots_.size(); ++i) {
        if (!roots_[i].attached || root_moved(roots_[i])) rescan_root(i);
      }
      for (auto& [uuid, js] : jobs_) {
        bool missing = js.root.empty() && !js.how.polled && !wd_by_path_.contains(js.dir);
        if ((js.incomplete_watch || missing) && !js.scanning) {
          metrics::rescans.inc();
          enqueue({task::scan_job, uuid, js.dir, 0});
        }
      }
      retry_unreadable();
      write_held_back_changes();
      arm_rescan_timer();
    });
  }
};

watcher::watcher(net::io_context& ctx, options opts, store::index& index, callbacks cb)
    : impl_(std::make_unique<impl>(ctx, std::move(opts), index, std::move(cb))) {}

watcher::~watcher() = default;

void watcher::start() { impl_->start(); }

void watcher::stop() { impl_->stop(); }

void watcher::reconfigure(options opts) { impl_->reconfigure(std::move(opts)); }

}  // namespace ckptd::watcher
