#include "support/daemon_process.hpp"

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace ckptd::test {

const std::string& daemon_binary() {
  static const std::string binary = [] {
    auto& suite = boost::unit_test::framework::master_test_suite();
    for (int i = 1; i + 1 <= suite.argc - 1; ++i) {
      if (std::string_view(suite.argv[i]) == "--") return std::string(suite.argv[i + 1]);
    }
    if (suite.argc > 1) return std::string(suite.argv[suite.argc - 1]);
    throw std::runtime_error("usage: ckptd_daemon_tests [boost.test options] -- /path/to/ckptd");
  }();
  return binary;
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

daemon_process::daemon_process(std::vector<std::string> args, process_options options) {
  bool has_listen = options.listen_fd >= 0;
  for (auto& a : args) has_listen = has_listen || a == "--listen";
  if (!has_listen) {
    args.push_back("--listen");
    args.push_back("127.0.0.1:0");
  }
  std::string pattern = (std::filesystem::temp_directory_path() / "ckptd-log-XXXXXX").string();
  int log_fd = ::mkstemp(pattern.data());
  if (log_fd < 0) throw std::runtime_error("mkstemp failed");
  log_path_ = pattern;

  std::vector<char*> argv;
  std::string binary = daemon_binary();
  argv.push_back(binary.data());
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(log_fd, STDERR_FILENO);
    int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(null_fd, STDOUT_FILENO);
    ::unsetenv("JOURNAL_STREAM");
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("LISTEN_FDS");
    ::unsetenv("LISTEN_PID");
    for (auto& [name, value] : options.env) ::setenv(name.c_str(), value.c_str(), 1);
    if (options.listen_fd >= 0) {
      // systemd's protocol: the sockets start at fd 3, and LISTEN_PID names
      // the process they are meant for.
      if (options.listen_fd == 3) {
        ::fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
      } else {
        ::dup2(options.listen_fd, 3);
      }
      ::setenv("LISTEN_FDS", "1", 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);

  // The daemon logs "listening on 127.0.0.1:PORT" once it has bound.
  bool listening = eventually(
      [&] {
        auto text = log();
        auto at = text.find("listening on ");
        if (at == std::string::npos) return !running();
        auto colon = text.find_first_of('\n', at);
        auto line = text.substr(at, colon - at);
        port_ = static_cast<std::uint16_t>(std::stoi(line.substr(line.rfind(':') + 1)));
        return true;
      },
      std::chrono::seconds(20));
  if (!listening || port_ == 0) {
    auto text = log();
    kill9();
    throw std::runtime_error("ckptd did not start listening; its log:\n" + text);
  }
}

daemon_process::~daemon_process() {
  if (pid_ > 0) kill9();
  std::error_code ec;
  std::filesystem::remove(log_path_, ec);
}

std::string daemon_process::log() const {
  std::ifstream in(log_path_);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool daemon_process::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int daemon_process::wait_exit(std::chrono::milliseconds deadline) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (pid_ > 0) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return -1;
    }
    if (std::chrono::steady_clock::now() >= until) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

int daemon_process::stop(std::chrono::milliseconds deadline) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int code = wait_exit(deadline);
  if (code == -2) {
    kill9();
    return -1;
  }
  return code;
}

void daemon_process::signal(int signal_number) {
  if (pid_ > 0) ::kill(pid_, signal_number);
}

bool daemon_process::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) {
  return eventually([&] { return log().find(text) != std::string::npos; }, timeout);
}

void daemon_process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

}  // namespace ckptd::test
