// Black-box tests of ckptd as a systemd service: sd_notify on a fake
// NOTIFY_SOCKET, socket activation through LISTEN_FDS, SIGHUP reloads,
// SIGTERM during a long-poll, and --check-config.

#include "support/daemon_process.hpp"
#include "support/fixtures.hpp"
#include "support/http_client.hpp"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

using namespace ckptd::test;
using namespace std::chrono_literals;

namespace {

// A unix datagram socket standing in for systemd's notification socket.
class notify_socket {
 public:
  explicit notify_socket(const std::filesystem::path& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_socket() { ::close(fd_); }

  // Collects messages until every one of `wanted` was seen or `timeout` passed.
  std::set<std::string> wait_for(const std::set<std::string>& wanted,
                                 std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      bool all = true;
      for (auto& w : wanted) all = all && seen_.contains(w);
      if (all) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buffer[4096];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) continue;
      std::istringstream lines(std::string(buffer, static_cast<std::size_t>(n)));
      for (std::string line; std::getline(lines, line);) {
        seen_.insert(line);
        if (line.rfind("STATUS=", 0) == 0) seen_.insert("STATUS=");
      }
    }
    return seen_;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::set<std::string> seen_;
};

std::string artifacts(const std::string& job) {
  return "/v1/post-training/job/artifacts?job_uuid=" + job;
}

// Runs a command line through the shell; returns its exit code and output.
std::pair<int, std::string> run_command(const std::string& command) {
  temp_dir out_dir;
  const auto out = (out_dir / "out").string();
  int status = std::system((command + " >" + out + " 2>&1").c_str());
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(service_tests)

BOOST_AUTO_TEST_CASE(notifies_ready_status_and_watchdog) {
  temp_dir dir;
  std::filesystem::create_directories(dir / "runs" / "job");
  notify_socket sock(dir / "notify");
  daemon_process d(
      {"--watch", (dir / "runs").string(), "--db", (dir / "db").string()},
      {.env = {{"NOTIFY_SOCKET", (dir / "notify").string()}, {"WATCHDOG_USEC", "200000"}}});
  auto seen = sock.wait_for({"READY=1", "WATCHDOG=1", "STATUS="}, 10s);
  BOOST_TEST(seen.contains("READY=1"));
  BOOST_TEST(seen.contains("WATCHDOG=1"));
  BOOST_TEST(seen.contains("STATUS="));
  BOOST_TEST(get(d.port(), "/readyz").status == 200);
  BOOST_TEST(d.stop() == 0);
  seen = sock.wait_for({"STOPPING=1"}, 5s);
  BOOST_TEST(seen.contains("STOPPING=1"));
}

BOOST_AUTO_TEST_CASE(serves_on_a_socket_passed_by_socket_activation) {
  temp_dir dir;
  std::filesystem::create_directories(dir / "runs" / "job");
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  BOOST_REQUIRE(::listen(listener, 16) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const auto port = ntohs(addr.sin_port);

  daemon_process d({"--watch", (dir / "runs").string(), "--db", (dir / "db").string()},
                   {.listen_fd = listener});
  ::close(listener);  // the daemon holds its own copy now
  BOOST_TEST(d.port() == port);
  BOOST_TEST(eventually([&] { return get(port, artifacts("job")).status == 200; }));
  BOOST_TEST(d.stop() == 0);
}

BOOST_AUTO_TEST_CASE(sighup_reloads_the_rate_limit_without_dropping_connections) {
  temp_dir dir;
  std::filesystem::create_directories(dir / "runs" / "job");
  const auto config = dir / "ckptd.conf";
  auto write_config = [&](const std::string& extra) {
    write_file(config, "watch = " + (dir / "runs").string() + "\ndb = " + (dir / "db").string() +
                           "\n" + extra);
  };
  write_config("rate-limit = 1000\nrate-burst = 1000\n");
  daemon_process d({"--config", config.string()});
  BOOST_REQUIRE(eventually([&] { return get(d.port(), "/readyz").status == 200; }));

  http_connection c(d.port());
  for (int i = 0; i < 20; ++i) BOOST_TEST(c.request("GET", artifacts("job")).status == 200);

  // An invalid configuration is refused; the old one stays.
  write_config("rate-limit = lots\n");
  d.signal(SIGHUP);
  BOOST_TEST(d.wait_for_log("keeping the old one"));
  for (int i = 0; i < 5; ++i) BOOST_TEST(c.request("GET", artifacts("job")).status == 200);

  write_config("rate-limit = 1\nrate-burst = 2\n");
  d.signal(SIGHUP);
  BOOST_TEST(d.wait_for_log("configuration reloaded"));
  int limited = 0;
  for (int i = 0; i < 10; ++i) limited += c.request("GET", artifacts("job")).status == 429;
  BOOST_TEST(limited >= 5);  // the same keep-alive connection, now limited
  BOOST_TEST(d.stop() == 0);
}

BOOST_AUTO_TEST_CASE(sigterm_during_a_long_poll_exits_cleanly_in_time) {
  temp_dir dir;
  std::filesystem::create_directories(dir / "runs" / "job");
  daemon_process d(
      {"--watch", (dir / "runs").string(), "--db", (dir / "db").string(), "--rate-limit", "0"});
  BOOST_REQUIRE(eventually([&] { return get(d.port(), "/readyz").status == 200; }));
  const auto etag = get(d.port(), artifacts("job")).header("etag");
  BOOST_REQUIRE(!etag.empty());
  auto poll = std::async(std::launch::async, [&] {
    try {
      return get(d.port(), artifacts("job"), {{"If-None-Match", etag}, {"Prefer", "wait=60"}})
          .status;
    } catch (const std::exception&) {
      return -1;  // the connection closed: also a clean end of a long-poll
    }
  });
  std::this_thread::sleep_for(300ms);
  BOOST_TEST((poll.wait_for(0s) == std::future_status::timeout));  // it is being held
  auto started = std::chrono::steady_clock::now();
  BOOST_TEST(d.stop(8s) == 0);
  BOOST_TEST((std::chrono::steady_clock::now() - started < 6s));
  BOOST_TEST((poll.wait_for(2s) == std::future_status::ready));
}

BOOST_AUTO_TEST_CASE(check_config_validates_and_names_the_line) {
  temp_dir dir;
  const auto good = dir / "good.conf";
  write_file(good, "# a comment\nwatch = /data/runs\nrate-limit = 20\n");
  auto [ok_code, ok_out] =
      run_command(daemon_binary() + " --check-config --config " + good.string());
  BOOST_TEST(ok_code == 0, ok_out);

  const auto unknown = dir / "unknown.conf";
  write_file(unknown, "watch = /data/runs\n\nrate-limt = 20\n");
  auto [bad_code, bad_out] =
      run_command(daemon_binary() + " --check-config --config " + unknown.string());
  BOOST_TEST(bad_code == 1);
  BOOST_TEST(bad_out.find("rate-limt") != std::string::npos, bad_out);
  BOOST_TEST(bad_out.find("line 3") != std::string::npos, bad_out);

  const auto bad_value = dir / "bad-value.conf";
  write_file(bad_value, "watch = /data/runs\nmax-depth = 0\n");
  auto [value_code, value_out] =
      run_command(daemon_binary() + " --check-config --config " + bad_value.string());
  BOOST_TEST(value_code == 1);
  BOOST_TEST(value_out.find("max-depth") != std::string::npos, value_out);
  BOOST_TEST(value_out.find("line 2") != std::string::npos, value_out);
}

BOOST_AUTO_TEST_SUITE_END()
