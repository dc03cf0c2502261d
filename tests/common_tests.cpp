// The shared pieces of ckptd::common: the logger's journal prefixes and its
// flood control.

#include <ckptd/log.hpp>

#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

// Not "log": <cmath>'s ::log would clash with it under clang.
namespace logger = ckptd::log;

namespace {

// Runs `body` with stderr sent to a fresh file, and returns what was written.
// With `as_journal`, JOURNAL_STREAM names that file, as journald would.
template <typename Body>
std::string capture_stderr(bool as_journal, Body body) {
  char path[] = "/tmp/ckptd-log-test-XXXXXX";
  int fd = ::mkstemp(path);
  BOOST_REQUIRE(fd >= 0);
  int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  struct stat st {};
  ::fstat(fd, &st);
  if (as_journal) {
    const std::string stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::setenv("JOURNAL_STREAM", stream.c_str(), 1);
  } else {
    ::unsetenv("JOURNAL_STREAM");
  }
  logger::detect_journal();
  body();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fd);
  ::unsetenv("JOURNAL_STREAM");
  logger::detect_journal();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  ::unlink(path);
  return text.str();
}

int count(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(common_tests)

BOOST_AUTO_TEST_CASE(journal_lines_carry_syslog_priorities) {
  auto text = capture_stderr(true, [] {
    logger::error("journal error line");
    logger::warning("journal warning line");
    logger::info("journal info line");
  });
  BOOST_TEST(text == "<3>journal error line\n<4>journal warning line\n<6>journal info line\n");
}

BOOST_AUTO_TEST_CASE(plain_lines_elsewhere_and_a_wrong_stream_is_not_the_journal) {
  auto plain = capture_stderr(false, [] { logger::notice("plain notice ", 42); });
  BOOST_TEST(plain == "ckptd notice: plain notice 42\n");
  // JOURNAL_STREAM naming another stream (stderr redirected since): plain text.
  ::setenv("JOURNAL_STREAM", "1:1", 1);
  logger::detect_journal();
  auto redirected = capture_stderr(false, [] {
    ::setenv("JOURNAL_STREAM", "1:1", 1);
    logger::detect_journal();
    logger::notice("not the journal");
  });
  BOOST_TEST(redirected == "ckptd notice: not the journal\n");
}

BOOST_AUTO_TEST_CASE(newlines_cannot_forge_lines) {
  auto text = capture_stderr(false, [] { logger::notice("a\nb\rc"); });
  BOOST_TEST(text == "ckptd notice: a b c\n");
}

BOOST_AUTO_TEST_CASE(repeated_warnings_are_held_back) {
  auto text = capture_stderr(false, [] {
    for (int i = 0; i < 50; ++i) logger::warning("cannot list /data/runs/bad: Permission denied");
    logger::warning("another cause");
    for (int i = 0; i < 3; ++i) logger::info("info lines are never held back");
  });
  BOOST_TEST(count(text, "cannot list /data/runs/bad") == 1);
  BOOST_TEST(count(text, "another cause") == 1);
  BOOST_TEST(count(text, "info lines are never held back") == 3);
}

BOOST_AUTO_TEST_SUITE_END()
