// Black-box reliability tests: the real ckptd under faults. kill -9 at random
// moments of a run, a full index volume, a damaged or newer index, and watch
// roots that vanish, turn into symlinks or lose their permissions. In each,
// what ckptd serves must end up equal to what the disk holds, and nothing it
// knew may change its created_at.
//
// Some cases need root (mounting a tmpfs, dropping privileges for the
// permission case); without it they say so and skip.

#include "support/api_views.hpp"
#include "support/daemon_process.hpp"
#include "support/fixtures.hpp"
#include "support/http_client.hpp"
#include "support/raw_db.hpp"

#include "codec.hpp"  // store/src: the schema key, to fake an index from a newer ckptd

#include <rocksdb/db.h>
#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace ckptd::test;
using namespace std::chrono_literals;

namespace {

// Waits until the job lists exactly `expected`, in order.
bool lists_eventually(std::uint16_t port, const std::string& job,
                      const std::vector<std::string>& expected,
                      std::chrono::milliseconds timeout = 10s) {
  return eventually([&] { return identifiers(checkpoints_of(port, job)) == expected; }, timeout);
}

// The job uuids of GET /v1/post-training/jobs.
std::set<std::string> job_list(std::uint16_t port) {
  std::set<std::string> out;
  auto res = get(port, "/v1/post-training/jobs");
  if (res.status != 200) return out;
  const auto body = json::parse(res.body);
  for (auto& j : body.as_object().at("data").as_array())
    out.emplace(j.as_object().at("job_uuid").as_string());
  return out;
}

// A sample of GET /metrics without labels ("name value"); -1 when absent.
double metric(std::uint16_t port, const std::string& name) {
  std::istringstream lines(get(port, "/metrics").body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  }
  return -1;
}

// How many times `text` occurs in `log`.
std::size_t occurrences(const std::string& log, std::string_view text) {
  std::size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + text.size()))
    ++n;
  return n;
}

std::vector<std::string> daemon_args(const fs::path& runs, const fs::path& db,
                                     std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--watch",     runs.string(), "--db",         db.string(),
                                "--log-level", "debug",       "--rate-limit", "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Every file and folder under `dir`: (size, mtime ns) by relative path.
std::map<std::string, std::pair<std::uintmax_t, std::int64_t>> folder_state(const fs::path& dir) {
  std::map<std::string, std::pair<std::uintmax_t, std::int64_t>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    BOOST_REQUIRE(::lstat(e.path().c_str(), &st) == 0);
    out[fs::relative(e.path(), dir).string()] = {
        S_ISDIR(st.st_mode) ? 0 : static_cast<std::uintmax_t>(st.st_size),
        std::int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
  }
  return out;
}

// Runs the daemon to its end (it is expected to refuse to start): exit code and log.
std::pair<int, std::string> run_to_exit(const std::vector<std::string>& args) {
  temp_dir out;
  std::string command = daemon_binary();
  for (const auto& a : args) command += " '" + a + "'";
  command += " --listen 127.0.0.1:0 >" + (out / "log").string() + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream in(out / "log");
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

std::string created_at(const json::value& c) {
  return std::string(c.as_object().at("created_at").as_string());
}

// The created_at of the job's first checkpoint; "<none>" when it has none.
std::string first_created_at(std::uint16_t port, const std::string& job) {
  const auto list = checkpoints_of(port, job);
  return list.empty() ? "<none>" : created_at(list[0]);
}

// Seed of the randomized tests: CKPTD_TEST_SEED, else a fixed one, so a
// failure can be replayed.
std::uint32_t test_seed() {
  if (const char* s = std::getenv("CKPTD_TEST_SEED"); s != nullptr && *s != '\0')
    return static_cast<std::uint32_t>(std::stoul(s));
  return 20240229;
}

// A tmpfs of `size` mounted on `dir` for the life of the object, unmounted
// (lazily if still busy) however the test ends.
class tmpfs_mount {
 public:
  tmpfs_mount(const fs::path& dir, const std::string& size) : dir_(dir) {
    fs::create_directories(dir);
    const std::string data = "size=" + size + ",mode=0755";
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, data.c_str()) == 0;
    if (!mounted_) error_ = std::strerror(errno);
  }
  ~tmpfs_mount() {
    if (mounted_ && ::umount(dir_.c_str()) != 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  fs::path dir_;
  bool mounted_ = false;
  std::string error_;
};

// Writes `path` until the volume is full; returns the bytes written.
std::uintmax_t fill_volume(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  BOOST_REQUIRE(fd >= 0);
  const std::string chunk(64 * 1024, 'x');
  std::uintmax_t total = 0;
  for (;;) {
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n <= 0) break;
    total += static_cast<std::uintmax_t>(n);
  }
  // Then byte by byte, so not even a small block is left.
  for (;;) {
    if (::write(fd, "x", 1) != 1) break;
    ++total;
  }
  ::close(fd);
  return total;
}

// How spawned_daemon starts ckptd.
struct launch {
  // As user nobody when the test runs as root, so that file permissions
  // apply to it; as the test's own user otherwise.
  bool as_nobody = true;
  // A command that ends by exec'ing its arguments (so the pid stays ckptd's):
  // ckptd and its arguments are appended. Empty: ckptd itself.
  std::vector<std::string> wrapper;
};

// ckptd started the way `launch` says, its stderr to a file. Reads the port
// from the log like daemon_process and stops the process by its pid.
class spawned_daemon {
 public:
  static constexpr uid_t nobody_uid = 65534;
  static constexpr gid_t nobody_gid = 65534;

  explicit spawned_daemon(std::vector<std::string> args, launch how = {}) {
    args.insert(args.end(), {"--listen", "127.0.0.1:0"});
    log_path_ = fs::temp_directory_path() / ("ckptd-spawned-" + std::to_string(::getpid()) + "-" +
                                             std::to_string(counter_++) + ".log");
    const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    BOOST_REQUIRE(log_fd >= 0);
    args.insert(args.begin(), daemon_binary());
    args.insert(args.begin(), how.wrapper.begin(), how.wrapper.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const bool drop = how.as_nobody && ::geteuid() == 0;
    pid_ = ::fork();
    BOOST_REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(log_fd, STDERR_FILENO);
      const int null_fd = ::open("/dev/null", O_RDWR);
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(null_fd, STDOUT_FILENO);
      if (drop && (::setgroups(0, nullptr) != 0 || ::setgid(nobody_gid) != 0 ||
                   ::setuid(nobody_uid) != 0)) {
        ::_exit(126);
      }
      ::unsetenv("NOTIFY_SOCKET");
      ::unsetenv("LISTEN_FDS");
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    const bool listening = eventually(
        [&] {
          const auto text = log();
          const auto at = text.find("listening on ");
          if (at == std::string::npos) return !running();
          const auto line = text.substr(at, text.find('\n', at) - at);
          port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
          return true;
        },
        20s);
    BOOST_REQUIRE_MESSAGE(listening && port_ != 0, "ckptd did not start; its log:\n" << log());
  }
  ~spawned_daemon() {
    stop();
    std::error_code ec;
    fs::remove(log_path_, ec);
  }
  spawned_daemon(const spawned_daemon&) = delete;
  spawned_daemon& operator=(const spawned_daemon&) = delete;

  std::uint16_t port() const { return port_; }
  std::string log() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  // SIGTERM; the exit code, or -1 when it had to be killed.
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    for (int i = 0; i < 1000; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return -1;
  }

 private:
  static inline int counter_ = 0;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  fs::path log_path_;
};

// Whether user `nobody` can run `binary` and write into `dir` (the folders
// above a checkout or $TMPDIR may be closed to it). Asked of a child that
// drops privileges the way spawned_daemon does.
bool nobody_can_use(const std::string& binary, const fs::path& dir) {
  const pid_t pid = ::fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const bool dropped = ::setgroups(0, nullptr) == 0 &&
                         ::setgid(spawned_daemon::nobody_gid) == 0 &&
                         ::setuid(spawned_daemon::nobody_uid) == 0;
    ::_exit(dropped && ::access(binary.c_str(), X_OK) == 0 &&
                    ::access(dir.c_str(), R_OK | W_OK | X_OK) == 0
                ? 0
                : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Lets user `nobody` into a test folder (temp_dir makes them 0700).
void open_up(const fs::path& path) {
  fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reliability_tests)

// kill -9 at random moments of a run, 15 times: while it starts and
// reconciles, between a checkpoint's files and its completing
// trainer_state.json, during rotation, while manifests come and go. After
// each restart the index equals what a daemon with an empty index finds on
// the same disk, and no created_at of a checkpoint it knew changed.
BOOST_AUTO_TEST_CASE(kill_9_at_random_moments_loses_and_invents_nothing) {
  const std::uint32_t seed = test_seed();
  BOOST_TEST_MESSAGE("seed " << seed << " (set CKPTD_TEST_SEED to replay another)");
  std::mt19937 rng(seed);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  auto pause = [&](int max_ms) {
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % (max_ms + 1)));
  };

  temp_dir dir;
  const auto runs = dir / "runs";
  hf_run run(runs / "hf-job", {.steps_per_epoch = 30, .save_total_limit = 3});
  const auto manifests = runs / "manifest-job";
  fs::create_directories(manifests);
  std::int64_t step = 0;
  bool pending = false;
  int manifest_count = 0;
  std::map<std::string, std::string> known_created_at;  // job/identifier -> created_at

  constexpr int rounds = 15;
  const auto budget = 60s;
  const auto started = std::chrono::steady_clock::now();
  int round = 0;
  for (; round < rounds && std::chrono::steady_clock::now() - started < budget; ++round) {
    {
      daemon_process d(daemon_args(runs, dir / "db"));
      const int operations = 1 + static_cast<int>(rng() % 4);
      const int kill_after = static_cast<int>(rng() % (operations + 1));
      for (int op = 0; op < operations; ++op) {
        if (op == kill_after) break;
        if (pending) {
          run.finish_save();  // a save that straddled the last crash
          pending = false;
        } else if (chance(70)) {
          step += 10;
          run.begin_save(step);
          pause(30);
          if (chance(80)) {
            run.finish_save();
          } else {
            pending = true;  // the crash comes before trainer_state.json
          }
        } else if (manifest_count > 0 && chance(30)) {
          remove_tree(manifests / ("m-" + std::to_string(rng() % manifest_count)));
        } else {
          write_manifest_checkpoint(
              manifests / ("m-" + std::to_string(manifest_count)),
              {.epoch = manifest_count, .train_loss = 1.0, .validation_loss = 1.5});
          ++manifest_count;
        }
        pause(40);
      }
      pause(120);
      d.kill9();
    }
    // While ckptd is down the trainer may finish the save it was in.
    if (pending && chance(50)) {
      run.finish_save();
      pending = false;
    }
    daemon_process restarted(daemon_args(runs, dir / "db"));
    temp_dir fresh_db;
    daemon_process fresh(daemon_args(runs, fresh_db / "db"));
    BOOST_TEST_REQUIRE(eventually([&] { return ready(restarted.port()); }, 20s), restarted.log());
    BOOST_TEST_REQUIRE(eventually([&] { return ready(fresh.port()); }, 20s), fresh.log());
    BOOST_TEST(job_list(restarted.port()) == job_list(fresh.port()), "round " << round);
    for (const std::string job : {"hf-job", "manifest-job"}) {
      const auto a = get(restarted.port(), artifacts_target(job));
      const auto b = get(fresh.port(), artifacts_target(job));
      BOOST_TEST(a.status == 200, "round " << round << " job " << job);
      BOOST_TEST(a.body == b.body, "round " << round << " job " << job);
      const auto body = json::parse(a.body);
      for (const auto& c : body.as_object().at("checkpoints").as_array()) {
        const std::string key = job + "/" + std::string(c.as_object().at("identifier").as_string());
        const auto [it, inserted] = known_created_at.emplace(key, created_at(c));
        BOOST_TEST(it->second == created_at(c), "round " << round << ": " << key);
      }
    }
    BOOST_TEST(fresh.stop() == 0);
    BOOST_TEST(restarted.stop() == 0);
  }
  BOOST_TEST_MESSAGE(round << " rounds in "
                           << std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now() - started)
                                  .count()
                           << " ms; " << step / 10 << " saves, " << manifest_count << " manifests");
  BOOST_TEST(round >= 8, "too few rounds within the time budget: " << round);
}

// The index volume fills up. Requests keep being answered from what is
// indexed; the failure is logged once and shown by /metrics and /readyz;
// once space returns the new checkpoints, and a job folder that appeared
// meanwhile, are indexed without a restart.
BOOST_AUTO_TEST_CASE(full_index_volume_keeps_serving_and_heals) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: mounting a small tmpfs for the index needs root");
    return;
  }
  temp_dir dir;
  tmpfs_mount volume(dir / "vol", "4m");
  if (!volume.mounted()) {
    BOOST_TEST_MESSAGE("skipped: cannot mount a tmpfs: " << volume.error());
    return;
  }
  const auto runs = dir / "runs";
  hf_run run(runs / "job", {.steps_per_epoch = 10});
  run.save(10);
  run.save(20);
  {
    daemon_process d(daemon_args(runs, dir / "vol" / "db", {"--rescan-interval", "0.5"}));
    const auto port = d.port();
    BOOST_TEST_REQUIRE(eventually([&] { return ready(port); }, 20s), d.log());
    BOOST_TEST_REQUIRE(eventually([&] { return checkpoints_of(port, "job").size() == 2u; }));
    BOOST_TEST(metric(port, "ckptd_index_healthy") == 1);

    const auto filled = fill_volume(dir / "vol" / "filler");
    BOOST_TEST_MESSAGE("filled the index volume with " << filled << " bytes");
    // The first few records may still fit in the log's last page; these do not.
    std::vector<std::string> all{"checkpoint-10", "checkpoint-20"};
    for (std::int64_t step = 30; step <= 120; step += 10) {
      run.save(step);
      all.push_back("checkpoint-" + std::to_string(step));
    }
    fs::create_directories(runs / "new-job");

    // The writes fail: logged, counted, /readyz says not ready.
    BOOST_TEST(eventually([&] { return metric(port, "ckptd_index_healthy") == 0; }, 10s), d.log());
    BOOST_TEST(metric(port, "ckptd_index_write_failures_total") > 0);
    BOOST_TEST(d.wait_for_log("cannot write job"));
    BOOST_TEST(eventually([&] { return get(port, "/readyz").status == 503; }, 5s));
    // What is indexed is still served, and the daemon keeps running.
    for (int i = 0; i < 10; ++i) {
      const auto ids = identifiers(checkpoints_of(port, "job"));
      BOOST_TEST(ids.size() >= 2u);
      BOOST_TEST(std::equal(ids.begin(), ids.end(), all.begin()));
      std::this_thread::sleep_for(100ms);
    }
    BOOST_TEST(get(port, "/healthz").status == 200);
    BOOST_TEST(d.running());
    // Many retries later the outage is still one log line, each checkpoint
    // was announced once, and the held-back changes are counted instead.
    std::this_thread::sleep_for(3s);
    BOOST_TEST(occurrences(d.log(), "cannot write job") == 1u, d.log());
    BOOST_TEST(occurrences(d.log(), "checkpoint-120 of job job is complete") == 1u, d.log());
    BOOST_TEST(metric(port, "ckptd_index_changes_held_back_total") > 0);

    // Space returns: the rescans write what is missing, without a restart.
    fs::remove(dir / "vol" / "filler");
    BOOST_TEST(eventually([&] { return identifiers(checkpoints_of(port, "job")) == all; }, 20s),
               d.log());
    // A job that appeared while the disk was full is written too.
    BOOST_TEST(eventually([&] { return get(port, artifacts_target("new-job")).status == 200; }),
               d.log());
    BOOST_TEST(eventually([&] { return metric(port, "ckptd_index_healthy") == 1; }));
    BOOST_TEST(eventually([&] { return ready(port); }, 5s));
    BOOST_TEST(occurrences(d.log(), "the index is writable again") == 1u, d.log());
    BOOST_TEST(d.stop() == 0);
  }
  // And it was written for good: a restart serves the same.
  daemon_process again(daemon_args(runs, dir / "vol" / "db"));
  BOOST_TEST_REQUIRE(eventually([&] { return ready(again.port()); }, 20s));
  BOOST_TEST(checkpoints_of(again.port(), "job").size() == 12u);
  BOOST_TEST(again.stop() == 0);
}

// The id a fresh event stream starts from: the index's newest event seq.
std::uint64_t newest_event_id(std::uint16_t port) {
  // The first frame is "id: <seq>" alone, after the head.
  const auto id_line = [](const std::string& text) {
    const auto at = text.find("\nid: ");
    return at != std::string::npos && text.find('\n', at + 5) != std::string::npos
               ? at
               : std::string::npos;
  };
  const std::string text = read_stream(
      port, "/v1/ckptd/events", [&](const std::string& t) { return id_line(t) != std::string::npos; });
  const auto at = id_line(text);
  BOOST_TEST_REQUIRE(at != std::string::npos, "no id on the event stream: " << text);
  return std::stoull(text.substr(at + 5));
}

// A damaged index, or one written by a newer ckptd: refused with a message
// that names the problem and the way out, and left exactly as it was. Then
// --rebuild-index moves it aside and rebuilds it from the disk, with the
// same created_at as before and event ids past the old index's.
void refuses_then_rebuilds(const std::string& what,
                           const std::function<void(const fs::path& db)>& damage,
                           const std::string& expected_message) {
  temp_dir dir;
  const auto runs = dir / "runs";
  const auto db = dir / "db";
  hf_run run(runs / "job", {.steps_per_epoch = 10});
  run.save(10);
  run.save(20);
  json::array before;
  std::uint64_t old_newest_event = 0;
  {
    daemon_process d(daemon_args(runs, db));
    BOOST_TEST_REQUIRE(eventually([&] { return ready(d.port()); }, 20s));
    BOOST_TEST_REQUIRE(eventually([&] { return checkpoints_of(d.port(), "job").size() == 2u; }));
    before = checkpoints_of(d.port(), "job");
    old_newest_event = newest_event_id(d.port());
    BOOST_TEST(d.stop() == 0);
  }
  damage(db);
  const auto damaged = folder_state(db);

  const auto [code, log] = run_to_exit(daemon_args(runs, db));
  BOOST_TEST(code != 0, what);
  BOOST_TEST(log.find(expected_message) != std::string::npos, what << ": " << log);
  BOOST_TEST(log.find("--rebuild-index") != std::string::npos, what << ": " << log);
  BOOST_TEST(log.find(db.string()) != std::string::npos, what << ": " << log);
  BOOST_TEST((folder_state(db) == damaged), what << ": the refused index was changed");

  daemon_process d(daemon_args(runs, db, {"--rebuild-index"}));
  BOOST_TEST_REQUIRE(eventually([&] { return ready(d.port()); }, 20s), d.log());
  int broken = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("db.broken-", 0) == 0) {
      ++broken;
      BOOST_TEST((folder_state(e.path()) == damaged), what << ": the moved-aside index changed");
    }
  }
  BOOST_TEST(broken == 1, what);
  BOOST_TEST(d.wait_for_log("rebuilding it from the disk"));
  BOOST_TEST(eventually([&] { return checkpoints_of(d.port(), "job") == before; }), what);
  // The rebuilt index's events (the same checkpoints created again) come
  // after every id the old one gave out, so no client resumes mid-way.
  BOOST_TEST(old_newest_event > 0u, what);
  BOOST_TEST(newest_event_id(d.port()) > old_newest_event + 1'000'000, what);
  BOOST_TEST(d.stop() == 0);
}

BOOST_AUTO_TEST_CASE(damaged_index_is_refused_untouched_and_rebuilt) {
  // Garbage over the MANIFEST, the file RocksDB opens first.
  refuses_then_rebuilds(
      "garbled MANIFEST",
      [](const fs::path& db) {
        int manifests = 0;
        for (const auto& e : fs::directory_iterator(db)) {
          if (e.path().filename().string().rfind("MANIFEST-", 0) != 0) continue;
          ++manifests;
          const auto size = fs::file_size(e.path());
          std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
          f.seekp(static_cast<std::streamoff>(std::min<std::uintmax_t>(size / 3, 32)));
          const std::string junk(static_cast<std::size_t>(size / 2), '\xa5');
          f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
        }
        BOOST_TEST_REQUIRE(manifests > 0);
      },
      "damaged");
}

BOOST_AUTO_TEST_CASE(index_from_a_newer_ckptd_is_refused_untouched_and_rebuilt) {
  refuses_then_rebuilds(
      "newer schema",
      [](const fs::path& db) {
        // The schema key is in the default column family.
        auto rdb = ckptd::test::raw_db::open(db);
        const auto newer = ckptd::store::index::schema_version + 1;
        BOOST_TEST_REQUIRE(rdb->Put(rocksdb::WriteOptions(), ckptd::store::codec::schema_key(),
                                    ckptd::store::codec::encode_schema(newer))
                               .ok());
      },
      "newer ckptd");
}

// A watch root vanishes and comes back, is replaced by a symlink to another
// folder of jobs, and is replaced back: each change is logged, the API
// follows it (jobs vanish, others appear), and the rescans recover.
BOOST_AUTO_TEST_CASE(watch_root_vanishes_turns_into_a_symlink_and_returns) {
  temp_dir dir;
  const auto runs = dir / "runs";
  hf_run a(runs / "job-a", {.steps_per_epoch = 10});
  a.save(10);
  hf_run b(dir / "elsewhere" / "job-b", {.steps_per_epoch = 10});
  b.save(10);
  b.save(20);
  daemon_process d(daemon_args(runs, dir / "db", {"--rescan-interval", "0.5"}));
  const auto port = d.port();
  BOOST_TEST_REQUIRE(eventually([&] { return ready(port); }, 20s));
  BOOST_TEST_REQUIRE(eventually([&] { return checkpoints_of(port, "job-a").size() == 1u; }));
  const auto created_a = first_created_at(port, "job-a");

  // Gone: its jobs 404 and leave the job list.
  fs::rename(runs, dir / "runs.away");
  BOOST_TEST(eventually([&] { return get(port, artifacts_target("job-a")).status == 404; }));
  BOOST_TEST(!job_list(port).contains("job-a"));
  BOOST_TEST(d.wait_for_log("is gone"));
  // Back, and followed again: a checkpoint written now is indexed.
  fs::rename(dir / "runs.away", runs);
  BOOST_TEST(eventually([&] { return checkpoints_of(port, "job-a").size() == 1u; }, 10s), d.log());
  a.save(20);
  BOOST_TEST(lists_eventually(port, "job-a", {"checkpoint-10", "checkpoint-20"}), d.log());
  BOOST_TEST(first_created_at(port, "job-a") == created_a);

  // Replaced by a symlink to another folder of jobs: job-a goes, job-b comes.
  fs::rename(runs, dir / "runs.old");
  fs::create_directory_symlink(dir / "elsewhere", runs);
  BOOST_TEST(eventually([&] { return get(port, artifacts_target("job-a")).status == 404; }));
  BOOST_TEST(eventually([&] { return checkpoints_of(port, "job-b").size() == 2u; }, 10s),
             "the jobs behind the symlink are not served; log:\n"
                 << d.log());

  // The real folder returns: job-a is back with its created_at, job-b goes.
  fs::remove(runs);
  fs::rename(dir / "runs.old", runs);
  BOOST_TEST(eventually([&] { return checkpoints_of(port, "job-a").size() == 2u; }, 10s), d.log());
  BOOST_TEST(eventually([&] { return get(port, artifacts_target("job-b")).status == 404; }));
  BOOST_TEST(first_created_at(port, "job-a") == created_a);
  BOOST_TEST(d.stop() == 0);
}

// A folder loses its read permission (chmod 000) and gets it back: first a
// job folder, then the watch root above it. As root, permissions do not
// apply, so the daemon runs as `nobody` then. A folder that cannot be read
// is unknown, not empty: what is indexed under it stays served (no
// checkpoint.deleted, the status stays), the problem is logged once and
// counted in /metrics, and once it is readable again what was written
// meanwhile is indexed, without a restart, with every created_at kept.
BOOST_AUTO_TEST_CASE(folders_lose_and_regain_permission) {
  temp_dir dir;
  open_up(dir.path());
  const auto runs = dir / "runs";
  hf_run a(runs / "job-a", {.steps_per_epoch = 10});
  a.save(10);
  const auto db = dir / "db";
  fs::create_directories(db);
  if (::geteuid() == 0) {
    if (::chown(db.c_str(), spawned_daemon::nobody_uid, spawned_daemon::nobody_gid) != 0 ||
        !nobody_can_use(daemon_binary(), db)) {
      BOOST_TEST_MESSAGE("skipped: user nobody cannot run " << daemon_binary() << " or write "
                                                            << db);
      return;
    }
  }
  spawned_daemon d(daemon_args(runs, db, {"--rescan-interval", "0.5"}));
  const auto port = d.port();
  BOOST_TEST_REQUIRE(eventually([&] { return ready(port); }, 20s), d.log());
  BOOST_TEST_REQUIRE(eventually([&] { return checkpoints_of(port, "job-a").size() == 1u; }),
                     d.log());
  const auto created_a = first_created_at(port, "job-a");
  const auto status_target = "/v1/post-training/job/status?job_uuid=job-a";
  const auto status_of = [&] {
    const auto res = get(port, status_target);
    return res.status == 200
               ? std::string(json::parse(res.body).as_object().at("status").as_string())
               : "<" + std::to_string(res.status) + ">";
  };
  BOOST_TEST_REQUIRE(status_of() == "in_progress");

  std::int64_t step = 10;
  int unreadable_lines = 0;
  for (const auto& folder : {runs / "job-a", runs}) {
    BOOST_TEST_CONTEXT("unreadable: " << folder) {
      fs::permissions(folder, fs::perms::none);
      step += 10;
      a.save(step);  // written (as root, or as the owner) while ckptd cannot look
      BOOST_TEST(eventually([&] { return metric(port, "ckptd_unreadable_folders") == 1; }, 5s),
                 d.log());
      // Several rescans later: still served as indexed, and logged once.
      for (int i = 0; i < 20; ++i) {
        const auto res = get(port, artifacts_target("job-a"));
        BOOST_TEST_REQUIRE(res.status == 200);
        BOOST_TEST_REQUIRE(checkpoints_of(port, "job-a").size() >= 1u, d.log());
        std::this_thread::sleep_for(100ms);
      }
      BOOST_TEST(status_of() == "in_progress");
      BOOST_TEST(first_created_at(port, "job-a") == created_a);
      ++unreadable_lines;
      BOOST_TEST(occurrences(d.log(), "cannot read ") == static_cast<std::size_t>(unreadable_lines),
                 d.log());
      BOOST_TEST(
          occurrences(d.log(), "Permission denied") == static_cast<std::size_t>(unreadable_lines),
          d.log());

      fs::permissions(folder, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
      std::vector<std::string> expected;
      for (std::int64_t s = 10; s <= step; s += 10)
        expected.push_back("checkpoint-" + std::to_string(s));
      const bool recovered = lists_eventually(port, "job-a", expected);
      BOOST_TEST(recovered, "not recovered once readable again; log:\n" << d.log());
      BOOST_TEST(first_created_at(port, "job-a") == created_a);
      BOOST_TEST(eventually([&] { return metric(port, "ckptd_unreadable_folders") == 0; }, 5s));
    }
  }
  BOOST_TEST(d.log().find("checkpoint-10 of job job-a is gone") == std::string::npos, d.log());
  BOOST_TEST(d.stop() == 0);
}

// inotify's watch limit is reached. Since Linux 5.11 the limit is counted
// per user namespace (user.max_inotify_watches), so ckptd runs in a user
// namespace of its own whose limit is 2 — the watch root and the job folder
// — and the rest of the machine is not disturbed. The limit is logged once,
// with the sysctl to raise, and checkpoints in the folder that could not be
// watched still appear, and disappear, through the periodic rescans.
BOOST_AUTO_TEST_CASE(inotify_watch_limit_falls_back_to_rescans) {
  const std::string set_limit = "echo 2 > /proc/sys/user/max_inotify_watches";
  if (std::system(
          ("unshare --user --map-root-user sh -c '" + set_limit + "' 2>/dev/null").c_str()) != 0) {
    BOOST_TEST_MESSAGE(
        "skipped: cannot lower max_inotify_watches in a new user namespace "
        "(unshare missing, user namespaces disabled, or a kernel before 5.11)");
    return;
  }
  temp_dir dir;
  const auto runs = dir / "runs";
  hf_run run(runs / "job" / "outputs", {.steps_per_epoch = 10});
  run.save(10);
  run.save(20);
  spawned_daemon d(daemon_args(runs, dir / "db", {"--rescan-interval", "0.5"}),
                   {.as_nobody = false,
                    .wrapper = {"unshare", "--user", "--map-root-user", "sh", "-c",
                                set_limit + " && exec \"$0\" \"$@\""}});
  const auto port = d.port();
  BOOST_TEST_REQUIRE(eventually([&] { return ready(port); }, 20s), d.log());
  BOOST_TEST(d.log().find("inotify watch limit reached") != std::string::npos, d.log());
  BOOST_TEST(d.log().find("user.max_inotify_watches") != std::string::npos, d.log());
  BOOST_TEST(eventually([&] { return checkpoints_of(port, "job").size() == 2u; }), d.log());

  // outputs/ has no watch: only the rescans see what happens in it.
  run.save(30);
  BOOST_TEST(eventually([&] { return checkpoints_of(port, "job").size() == 3u; }, 5s), d.log());
  remove_tree(run.checkpoint_dir(10));
  BOOST_TEST(lists_eventually(port, "job", {"checkpoint-20", "checkpoint-30"}, 5s), d.log());
  BOOST_TEST(metric(port, "ckptd_rescans_total") > 0);
  BOOST_TEST(occurrences(d.log(), "inotify watch limit reached") == 1u, d.log());
  BOOST_TEST(d.stop() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
