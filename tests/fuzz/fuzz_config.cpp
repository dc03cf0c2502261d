// Fuzz target: the configuration file. The input is written to a file and
// read exactly as `ckptd --check-config --config FILE` reads it, through
// ckptd::daemon::parse (daemon/options.cpp, compiled in unchanged). Values
// that parse must satisfy the limits parse() promises.
//
// parse() prints its verdict to stdout/stderr; both streams are muted here so
// the fuzzer's own output stays readable (sanitizer reports go to fd 2
// directly and are not affected).

#include "options.hpp"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <streambuf>
#include <string>
#include <string_view>
#include <system_error>

namespace {

// Swallows what parse() prints.
class null_buffer final : public std::streambuf {
 protected:
  int overflow(int c) override { return c; }
  std::streamsize xsputn(const char*, std::streamsize n) override { return n; }
};

// The one config file this process rewrites for every input; removed at exit.
class config_file {
 public:
  config_file() {
    path_ = (std::filesystem::temp_directory_path() / "ckptd-fuzz-config-XXXXXX").string();
    const int fd = ::mkstemp(path_.data());
    if (fd < 0) {
      std::perror("mkstemp");
      std::abort();
    }
    ::close(fd);
  }
  ~config_file() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  config_file(const config_file&) = delete;
  config_file& operator=(const config_file&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

const std::string& config_path() {
  static const config_file file;
  return file.path();
}

[[noreturn]] void invariant_failed(const char* what) {
  std::fprintf(stderr, "invariant failed: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static null_buffer sink;
  std::cout.rdbuf(&sink);
  std::cerr.rdbuf(&sink);
  (void)config_path();
  return 0;
}

namespace {

// KNOWN BUG, skipped until daemon/options.cpp guards against it: Boost
// 1.81's error_with_option_name::what() loops forever when an option name or
// value it reports holds one of its own "%placeholder%" tokens, so
// "rate-limit = %value%" or "x%canonical_option% = 1" hangs parse() (and
// ckptd at start, --check-config, and the HTTP thread on SIGHUP). The seed
// corpus keeps such an input (known-hang-placeholder) for when this goes.
bool holds_placeholder(std::string_view text) {
  for (std::size_t open = text.find('%'); open != std::string_view::npos;
       open = text.find('%', open + 1)) {
    const std::size_t close = text.find('%', open + 1);
    if (close == std::string_view::npos) return false;
    const auto name = text.substr(open + 1, close - open - 1);
    if (!name.empty() &&
        name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string_view::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (holds_placeholder(std::string_view(reinterpret_cast<const char*>(data), size))) return 0;
  {
    std::ofstream out(config_path(), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::string argv_text[] = {"ckptd", "--check-config", "--config", config_path()};
  char* argv[] = {argv_text[0].data(), argv_text[1].data(), argv_text[2].data(),
                  argv_text[3].data(), nullptr};
  ckptd::daemon::settings s;
  const auto result = ckptd::daemon::parse(4, argv, s);
  if (result == ckptd::daemon::outcome::run) invariant_failed("--check-config did not exit");
  if (result == ckptd::daemon::outcome::exit_success) {
    // What a valid configuration promises the rest of the daemon.
    if (s.watch.empty() && s.jobs.empty() && !s.demo_dir) invariant_failed("nothing to watch");
    if (s.max_depth < 1 || s.max_depth > 32) invariant_failed("max-depth out of range");
    if (!(s.rate_limit >= 0) || !(s.rate_burst >= 1)) invariant_failed("rate out of range");
    if (s.poll_interval.count() < 100 || s.rescan_interval.count() < 100) {
      invariant_failed("interval below 0.1 s");
    }
    if (s.max_connections < 1 || s.rate_clients < 1) invariant_failed("a bound below 1");
    for (const auto& f : s.watch) {
      if (f.path.empty()) invariant_failed("an empty watch folder");
    }
    for (const auto& [uuid, f] : s.jobs) {
      if (uuid.empty() || f.path.empty()) invariant_failed("an empty job");
    }
  }
  return 0;
}
