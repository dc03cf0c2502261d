#pragma once
// Runs the real ckptd binary for black-box tests: on 127.0.0.1, on a port the
// kernel picks (--listen 127.0.0.1:0, read back from the daemon's log), with
// stderr captured to a file. Every process started is stopped by its PID.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ckptd::test {

// The ckptd binary under test: the argument after "--" on the test's command line.
const std::string& daemon_binary();

// How to start the daemon beyond its arguments.
struct process_options {
  // Extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
  std::vector<std::pair<std::string, std::string>> env;
  // A listening socket handed over as systemd does (fd 3, LISTEN_FDS=1 and
  // LISTEN_PID set to the child's pid); -1 for none.
  int listen_fd = -1;
};

class daemon_process {
 public:
  // Starts ckptd with `args` plus "--listen 127.0.0.1:0" (unless args has
  // --listen or a socket is handed over) and waits until it logs the port it
  // listens on. Throws if it exits first.
  explicit daemon_process(std::vector<std::string> args, process_options options = {});
  ~daemon_process();  // SIGKILL and reap, if still running
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;

  std::uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Everything the daemon wrote to stderr so far.
  std::string log() const;
  bool running();

  // SIGTERM, then waits up to `deadline`; returns the exit code, or -1 when it
  // had to be killed, or 128+signal when a signal ended it.
  int stop(std::chrono::milliseconds deadline = std::chrono::seconds(10));
  // SIGKILL and reap: a crash at an arbitrary moment.
  void kill9();
  // Sends a signal (SIGHUP to reload, say) without waiting.
  void signal(int signal_number);
  // Polls the log until it holds `text`.
  bool wait_for_log(std::string_view text,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  int wait_exit(std::chrono::milliseconds deadline);
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::filesystem::path log_path_;
};

// Polls `condition` every 20 ms until it holds or `timeout` passes.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace ckptd::test
