// store_tests: the codec and the Status mapping as pure functions first, then
// the index against a real RocksDB in a fresh temporary folder per test.

#include <ckptd/store.hpp>

// store's private headers (store/src is on the tests' include path).
#include "codec.hpp"
#include "support/raw_db.hpp"
#include "status.hpp"

#include <boost/test/unit_test.hpp>

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <regex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

// Boost.Test prints both sides of a failed comparison.
namespace ckptd::store {
std::ostream& operator<<(std::ostream& os, const training_metrics& m) {
  return os << "{epoch=" << m.epoch << " train_loss=" << m.train_loss
            << " validation_loss=" << m.validation_loss << " perplexity=" << m.perplexity << "}";
}
std::ostream& operator<<(std::ostream& os, const checkpoint& c) {
  os << "{path=" << codec::printable(c.path) << " identifier=" << codec::printable(c.identifier)
     << " epoch=" << c.epoch << " step=" << c.step << " created_at_ns=" << c.created_at_ns
     << " metrics=";
  if (c.metrics) {
    os << *c.metrics;
  } else {
    os << "none";
  }
  return os << " fingerprint=" << codec::printable(c.fingerprint) << "}";
}
std::ostream& operator<<(std::ostream& os, const job& j) {
  return os << "{uuid=" << codec::printable(j.uuid) << " dir=" << codec::printable(j.dir)
            << " first_seen_ns=" << j.first_seen_ns << " status=" << j.status
            << " started_at_ns=" << j.started_at_ns << " completed_at_ns=" << j.completed_at_ns << "}";
}
std::ostream& operator<<(std::ostream& os, const event& e) {
  return os << "{seq=" << e.seq << " job_uuid=" << codec::printable(e.job_uuid)
            << " type=" << codec::printable(e.type) << " data=" << codec::printable(e.data)
            << " at_ns=" << e.at_ns << "}";
}
}  // namespace ckptd::store

namespace {

namespace fs = std::filesystem;
namespace store = ckptd::store;
namespace codec = ckptd::store::codec;
using store::errc;
using namespace std::string_literals;
using ckptd::test::raw_db;

// ---------------------------------------------------------------- helpers

template <class T>
void expect_error(const boost::system::result<T>& r, errc expected) {
  BOOST_TEST_REQUIRE(!r.has_value(),
                     "expected " << store::make_error_code(expected).message() << ", got success");
  BOOST_TEST(r.error() == store::make_error_code(expected),
             "expected \"" << store::make_error_code(expected).message() << "\", got \""
                           << r.error().message() << "\"");
}

store::checkpoint make_checkpoint(std::string path, std::int64_t n) {
  store::checkpoint c;
  c.identifier = fs::path(path).filename().string();
  c.path = std::move(path);
  c.epoch = n;
  c.step = n * 100;
  c.created_at_ns = 1'700'000'000'000'000'000 + n;
  c.fingerprint = "size=" + std::to_string(n);
  return c;
}

store::job make_job(std::string uuid) {
  return {.uuid = uuid, .dir = "/train/" + uuid, .first_seen_ns = 1'700'000'000'000'000'000};
}

// job_change builders: designated initializers that skip members trip GCC
// 12's -Wmissing-field-initializers.
store::job_change change_of(std::string uuid) {
  store::job_change c;
  c.job_uuid = std::move(uuid);
  return c;
}

store::job_change upsert_of(store::job j) {
  store::job_change c = change_of(j.uuid);
  c.upsert_job = std::move(j);
  return c;
}

store::job_change removal_of(std::string uuid) {
  store::job_change c = change_of(std::move(uuid));
  c.remove_job = true;
  return c;
}

// Every field away from its default, including the extremes.
store::checkpoint full_checkpoint() {
  store::checkpoint c;
  c.path = "/ckpt/job 1/épоch-3/step-\xff\x01";
  c.identifier = "épоch-3 ✓";
  c.epoch = std::numeric_limits<std::int64_t>::max();
  c.step = std::numeric_limits<std::int64_t>::min();
  c.created_at_ns = -1;
  c.metrics = store::training_metrics{.epoch = -42,
                                      .train_loss = -0.0,
                                      .validation_loss = 1e308,
                                      .perplexity = std::numeric_limits<double>::denorm_min()};
  c.fingerprint = "bin\0ary\xff"s;  // opaque: may hold any byte
  return c;
}

// A fresh folder per test, removed afterwards; the index lives in a
// not-yet-existing subfolder so that open() also creates folders.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "ckptd-store-XXXXXX").string();
    BOOST_TEST_REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct db_fixture {
  temp_dir tmp;
  fs::path dir = tmp.path / "index";
  std::shared_ptr<std::mutex> lines_mutex = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();

  [[nodiscard]] store::index::log_sink sink() const {
    return [m = lines_mutex, l = lines](std::string_view line) {
      const std::lock_guard lock(*m);
      l->emplace_back(line);
    };
  }
  [[nodiscard]] std::vector<std::string> logged() const {
    const std::lock_guard lock(*lines_mutex);
    return *lines;
  }
  [[nodiscard]] bool logged_containing(std::string_view needle) const {
    const auto all = logged();
    return std::any_of(all.begin(), all.end(),
                       [&](const std::string& l) { return l.find(needle) != std::string::npos; });
  }

  // Shows what the index told the operator (with --log_level=message).
  void show_log() const {
    for (const auto& line : logged()) BOOST_TEST_MESSAGE("index log: " << line);
  }

  [[nodiscard]] std::unique_ptr<store::index> open() const {
    auto r = store::index::open(dir, sink());
    BOOST_TEST_REQUIRE(r.has_value(), "open failed: " << r.error().message());
    return std::move(*r);
  }

  // Creates a ckptd index holding one job with one checkpoint, and closes it.
  void create_index() const {
    auto idx = open();
    auto change = upsert_of(make_job("j1"));
    change.upserts.push_back(make_checkpoint("/train/j1/ckpt-1", 1));
    BOOST_TEST_REQUIRE(idx->apply(change).has_value());
  }

  // Opens the folder with RocksDB directly, as another program would.
  // The folder opened with plain RocksDB, every column family it has open.
  [[nodiscard]] raw_db open_raw(bool create = false) const {
    return raw_db::open(dir, create);
  }
  // Puts a key into `family` ("default", or ckptd's "events").
  void raw_put(std::string_view key, std::string_view value,
               const std::string& family = rocksdb::kDefaultColumnFamilyName) const {
    auto db = open_raw();
    const auto s = db->Put(rocksdb::WriteOptions(), db.family(family), key, value);
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
  }
};

// Everything about a folder that a refused open must leave alone.
struct file_state {
  std::uintmax_t size;
  fs::file_time_type mtime;
  std::string contents;
  friend bool operator==(const file_state&, const file_state&) = default;
};
using folder_state = std::map<std::string, file_state>;

folder_state snapshot(const fs::path& dir) {
  folder_state out;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    const auto rel = fs::relative(entry.path(), dir).string();
    if (!entry.is_regular_file()) {
      out[rel] = {0, entry.last_write_time(), "<dir>"};
      continue;
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::string contents((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    out[rel] = {entry.file_size(), entry.last_write_time(), std::move(contents)};
  }
  return out;
}

void expect_unchanged(const folder_state& before, const fs::path& dir) {
  const auto after = snapshot(dir);
  BOOST_TEST(before.size() == after.size());
  for (const auto& [name, state] : before) {
    const auto it = after.find(name);
    BOOST_TEST_REQUIRE((it != after.end()), name << " disappeared");
    BOOST_TEST((it->second == state), name << " changed");
  }
  for (const auto& [name, state] : after) {
    BOOST_TEST(before.contains(name), name << " appeared");
  }
}

fs::path only_file_starting(const fs::path& dir, std::string_view prefix) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().filename().string().starts_with(prefix)) found.push_back(entry.path());
  }
  BOOST_TEST_REQUIRE(found.size() == 1u, "files starting with " << prefix);
  return found.front();
}

void write_file(const fs::path& file, std::string_view contents) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  BOOST_TEST_REQUIRE(out.good());
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

store::event event_of(std::string type, std::string data, std::int64_t at_ns = 0) {
  store::event e;
  e.type = std::move(type);
  e.data = std::move(data);
  e.at_ns = at_ns;
  return e;
}

// A change adding one checkpoint to `uuid` together with its event.
store::job_change created(const std::string& uuid, std::int64_t n) {
  auto change = change_of(uuid);
  change.upserts = {make_checkpoint("/" + uuid + "/ckpt-" + std::to_string(1000 + n), n)};
  change.events = {event_of("checkpoint.created", R"({"n":)" + std::to_string(n) + "}", n + 1)};
  return change;
}

std::vector<std::uint64_t> seqs_of(const std::vector<store::event>& events) {
  std::vector<std::uint64_t> out;
  for (const auto& e : events) out.push_back(e.seq);
  return out;
}

std::vector<std::uint64_t> seq_range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> out;
  for (auto s = first; s <= last; ++s) out.push_back(s);
  return out;
}

// Every retained event, checked to be exactly first_event_seq()..last_event_seq().
std::vector<store::event> all_events(const store::index& idx) {
  auto got = idx.events_after(0, std::numeric_limits<std::size_t>::max());
  BOOST_TEST_REQUIRE(got.has_value(), got.error().message());
  if (idx.last_event_seq() == 0) {
    BOOST_TEST(got->empty());
    BOOST_TEST(idx.first_event_seq() == 0u);
  } else {
    BOOST_TEST(seqs_of(*got) == seq_range(idx.first_event_seq(), idx.last_event_seq()),
               boost::test_tools::per_element());
  }
  return std::move(*got);
}

// A UTC time as move_aside() stamps it.
std::string utc_stamp(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buffer[32];
  return {buffer, std::strftime(buffer, sizeof buffer, "%Y%m%dT%H%M%SZ", &tm)};
}

// A small tmpfs, unmounted (lazily, so even a busy one goes) however the test
// ends. Only root may mount.
struct tmpfs_mount {
  fs::path dir;
  int error = 0;  // errno of a failed mount
  tmpfs_mount(fs::path where, const char* options) : dir(std::move(where)) {
    fs::create_directories(dir);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options) != 0) error = errno;
  }
  tmpfs_mount(const tmpfs_mount&) = delete;
  tmpfs_mount& operator=(const tmpfs_mount&) = delete;
  ~tmpfs_mount() {
    if (error == 0) ::umount2(dir.c_str(), MNT_DETACH);
  }
};

// Writes to `file` until the volume is full; returns the bytes written.
std::uintmax_t fill_volume(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  BOOST_TEST_REQUIRE(fd >= 0, "cannot create " << file << ": " << std::strerror(errno));
  const std::string chunk(64 << 10, 'f');
  std::uintmax_t total = 0;
  for (;;) {
    const ssize_t n = ::write(fd, chunk.data(), chunk.size());
    if (n > 0) {
      total += static_cast<std::uintmax_t>(n);
      continue;
    }
    const int e = errno;
    ::close(fd);
    BOOST_TEST_REQUIRE(e == ENOSPC, "filling the volume: " << std::strerror(e));
    return total;
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(store_tests)

// ============================================================ keys (pure)

BOOST_AUTO_TEST_CASE(key_layout_is_kind_byte_then_parts) {
  BOOST_TEST(codec::job_key("u1") == "ju1");
  BOOST_TEST(codec::checkpoint_key("u1", "/p") == "cu1\0/p"s);
  BOOST_TEST(codec::checkpoint_prefix("u1") == "cu1\0"s);
  BOOST_TEST(codec::checkpoint_prefix_end("u1") == "cu1\1"s);
  BOOST_TEST(codec::schema_key() == "mschema");
  BOOST_TEST(codec::jobs_begin() == "j");
  BOOST_TEST(codec::jobs_end() == "k");
}

BOOST_AUTO_TEST_CASE(job_prefixes_do_not_overlap) {
  // "a" is a string prefix of "ab" and "a\x01"-ish uuids; the NUL separator
  // must keep every key of one job inside its range and every other out.
  const std::vector<std::string> uuids = {"a", "ab", "a0", "a\x01", "a\xff", "b", "A"};
  const std::vector<std::string> paths = {"/", "/x", "\x01", "\xff\xff", "/a/b/c"};
  for (const auto& owner : uuids) {
    const auto begin = codec::checkpoint_prefix(owner);
    const auto end = codec::checkpoint_prefix_end(owner);
    for (const auto& uuid : uuids) {
      for (const auto& path : paths) {
        const auto key = codec::checkpoint_key(uuid, path);
        const bool inside = begin <= key && key < end;
        BOOST_TEST(inside == (uuid == owner), codec::printable(key)
                                                  << " vs range of " << codec::printable(owner));
        BOOST_TEST(key.starts_with(begin) == (uuid == owner));
      }
      // No job record falls into a checkpoint range, nor the reverse.
      BOOST_TEST(!(begin <= codec::job_key(uuid) && codec::job_key(uuid) < end));
      const auto ck = codec::checkpoint_key(uuid, "/p");
      BOOST_TEST(!(codec::jobs_begin() <= ck && ck < codec::jobs_end()));
    }
    BOOST_TEST((codec::jobs_begin() <= codec::job_key(owner) &&
                codec::job_key(owner) < codec::jobs_end()));
  }
}

BOOST_AUTO_TEST_CASE(storable_parts_are_nonempty_without_nul) {
  BOOST_TEST(codec::is_storable("abc"));
  BOOST_TEST(codec::is_storable("/a b/\xff"));
  BOOST_TEST(!codec::is_storable(""));
  BOOST_TEST(!codec::is_storable("a\0b"s));
  BOOST_TEST(!codec::is_storable("\0"s));
}

BOOST_AUTO_TEST_CASE(keys_decode_back_to_their_parts) {
  auto uuid = codec::job_uuid_from_key(codec::job_key("u-1"));
  BOOST_TEST_REQUIRE(uuid.has_value());
  BOOST_TEST(*uuid == "u-1");
  const auto prefix = codec::checkpoint_prefix("u-1");
  auto path = codec::path_from_key(codec::checkpoint_key("u-1", "/p/q"), prefix);
  BOOST_TEST_REQUIRE(path.has_value());
  BOOST_TEST(*path == "/p/q");

  expect_error(codec::job_uuid_from_key(""), errc::corrupt);
  expect_error(codec::job_uuid_from_key("j"), errc::corrupt);
  expect_error(codec::job_uuid_from_key("cu-1"), errc::corrupt);
  expect_error(codec::job_uuid_from_key("ju\0x"s), errc::corrupt);
  expect_error(codec::path_from_key(prefix, prefix), errc::corrupt);  // empty path
  expect_error(codec::path_from_key(prefix + "a\0b"s, prefix), errc::corrupt);
  expect_error(codec::path_from_key("cother\0/p"s, prefix), errc::corrupt);
}

// ========================================================== values (pure)

BOOST_AUTO_TEST_CASE(checkpoint_round_trips_every_field) {
  const auto c = full_checkpoint();
  auto back = codec::decode_checkpoint(codec::encode_checkpoint(c), c.path);
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(*back == c);
  BOOST_TEST(std::signbit(back->metrics->train_loss));  // -0.0 stays negative

  store::checkpoint minimal;  // metrics absent, empty strings, step -1
  minimal.path = "/p";
  auto back_min = codec::decode_checkpoint(codec::encode_checkpoint(minimal), "/p");
  BOOST_TEST_REQUIRE(back_min.has_value());
  BOOST_TEST(*back_min == minimal);
  BOOST_TEST(!back_min->metrics.has_value());
  BOOST_TEST(back_min->step == -1);

  // Metrics present but all zero are not the same as absent.
  store::checkpoint zeros = minimal;
  zeros.metrics = store::training_metrics{};
  auto back_zeros = codec::decode_checkpoint(codec::encode_checkpoint(zeros), "/p");
  BOOST_TEST_REQUIRE(back_zeros.has_value());
  BOOST_TEST(back_zeros->metrics.has_value());
  BOOST_TEST(*back_zeros == zeros);
}

BOOST_AUTO_TEST_CASE(doubles_keep_their_exact_bits) {
  const double specials[] = {std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(),
                             std::numeric_limits<double>::quiet_NaN(),
                             -std::numeric_limits<double>::max(),
                             std::numeric_limits<double>::min(),
                             0.1,
                             -2.5e-300};
  for (const double d : specials) {
    store::checkpoint c;
    c.path = "/p";
    c.metrics = store::training_metrics{
        .epoch = 1, .train_loss = d, .validation_loss = -d, .perplexity = d};
    auto back = codec::decode_checkpoint(codec::encode_checkpoint(c), "/p");
    BOOST_TEST_REQUIRE(back.has_value());
    BOOST_TEST(std::bit_cast<std::uint64_t>(back->metrics->train_loss) ==
               std::bit_cast<std::uint64_t>(d));
    BOOST_TEST(std::bit_cast<std::uint64_t>(back->metrics->validation_loss) ==
               std::bit_cast<std::uint64_t>(-d));
  }
}

BOOST_AUTO_TEST_CASE(job_and_schema_round_trip) {
  const store::job j{.uuid = "u", .dir = "/jobs/ü", .first_seen_ns = -7, .status = "in_progress",
                     .started_at_ns = 5, .completed_at_ns = -3};
  auto back = codec::decode_job(codec::encode_job(j), "u");
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(*back == j);

  for (const std::uint32_t v : {1u, 2u, 0xdeadbeefu}) {
    auto version = codec::decode_schema(codec::encode_schema(v));
    BOOST_TEST_REQUIRE(version.has_value());
    BOOST_TEST(*version == v);
  }
}

BOOST_AUTO_TEST_CASE(encodings_are_pinned_little_endian) {
  // A changed byte here is a format change: bump value_format and the schema.
  BOOST_TEST(codec::encode_schema(1) == "\x01\0\0\0"s);
  const store::job j{.uuid = "u", .dir = "/d", .first_seen_ns = 0x0102030405060708};
  BOOST_TEST(codec::encode_job(j) ==
             "\x01"
             "\x02\0\0\0"
             "/d"
             "\x08\x07\x06\x05\x04\x03\x02\x01"
             "\0\0\0\0"                           // status: empty
             "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"s);  // started_at, completed_at
  store::checkpoint c;
  c.path = "/not-in-value";
  c.identifier = "i";
  c.epoch = 1;
  c.step = -1;
  c.created_at_ns = 2;
  c.fingerprint = "f";
  BOOST_TEST(codec::encode_checkpoint(c) ==
             "\x01"                              // format
             "\x01\0\0\0i"                       // identifier
             "\x01\0\0\0\0\0\0\0"                // epoch
             "\xff\xff\xff\xff\xff\xff\xff\xff"  // step -1
             "\x02\0\0\0\0\0\0\0"                // created_at_ns
             "\0"                                // no metrics
             "\x01\0\0\0f"s);                    // fingerprint
}

// The listing hash is written only when known, after the fingerprint, so
// records written before it existed still decode (to 0, "unknown").
BOOST_AUTO_TEST_CASE(checkpoint_listing_hash_round_trips_and_is_optional) {
  auto c = full_checkpoint();
  const auto without = codec::encode_checkpoint(c);
  c.listing_hash = 0x0123456789abcdefull;
  const auto with = codec::encode_checkpoint(c);
  BOOST_TEST(with.size() == without.size() + 8);
  BOOST_TEST(with.substr(0, without.size()) == without);
  auto back = codec::decode_checkpoint(with, c.path);
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(*back == c);
  auto old = codec::decode_checkpoint(without, c.path);
  BOOST_TEST_REQUIRE(old.has_value());
  BOOST_TEST(old->listing_hash == 0u);
  for (std::size_t n = without.size() + 1; n < with.size(); ++n) {
    expect_error(codec::decode_checkpoint(std::string_view(with).substr(0, n), c.path),
                 errc::corrupt);
  }
  // A stored 0 would be a second encoding of "unknown".
  expect_error(codec::decode_checkpoint(without + std::string(8, '\0'), c.path), errc::corrupt);
}

BOOST_AUTO_TEST_CASE(truncated_values_are_corrupt_at_every_length) {
  const auto checkpoint_bytes = codec::encode_checkpoint(full_checkpoint());
  for (std::size_t n = 0; n < checkpoint_bytes.size(); ++n) {
    expect_error(codec::decode_checkpoint(std::string_view(checkpoint_bytes).substr(0, n), "/p"),
                 errc::corrupt);
  }
  const auto job_bytes = codec::encode_job(make_job("u"));
  for (std::size_t n = 0; n < job_bytes.size(); ++n) {
    expect_error(codec::decode_job(std::string_view(job_bytes).substr(0, n), "u"), errc::corrupt);
  }
  const auto schema_bytes = codec::encode_schema(1);
  for (std::size_t n = 0; n < schema_bytes.size(); ++n) {
    expect_error(codec::decode_schema(std::string_view(schema_bytes).substr(0, n)), errc::corrupt);
  }
}

BOOST_AUTO_TEST_CASE(malformed_values_are_corrupt) {
  const auto good = codec::encode_checkpoint(make_checkpoint("/p", 1));
  expect_error(codec::decode_checkpoint(good + "x", "/p"), errc::corrupt);  // trailing byte
  expect_error(codec::decode_job(codec::encode_job(make_job("u")) + "\0"s, "u"), errc::corrupt);
  expect_error(codec::decode_schema(codec::encode_schema(1) + "\0"s), errc::corrupt);

  auto bad_format = good;
  bad_format[0] = 2;
  expect_error(codec::decode_checkpoint(bad_format, "/p"), errc::corrupt);

  auto bad_flag = good;
  const std::size_t flag_at = 1 + 4 + good[1] + 3 * 8;  // format, identifier, three i64
  BOOST_TEST_REQUIRE(bad_flag[flag_at] == '\0');
  bad_flag[flag_at] = 2;
  expect_error(codec::decode_checkpoint(bad_flag, "/p"), errc::corrupt);

  // A length prefix pointing far past the end must not read or allocate it.
  const std::string huge_length =
      "\x01\xff\xff\xff\xff"
      "abc"s;
  expect_error(codec::decode_checkpoint(huge_length, "/p"), errc::corrupt);
  expect_error(codec::decode_job(huge_length, "u"), errc::corrupt);
  expect_error(codec::decode_checkpoint("", "/p"), errc::corrupt);
}

BOOST_AUTO_TEST_CASE(mutated_values_decode_or_fail_cleanly) {
  // Fuzz-style, deterministic seed: random damage never crashes a decoder,
  // and whatever does decode re-encodes to exactly the bytes given (the
  // encoding is canonical, so nothing is silently reinterpreted).
  std::mt19937_64 rng(20240229);
  const std::vector<std::string> seeds = {codec::encode_checkpoint(full_checkpoint()),
                                          codec::encode_checkpoint(make_checkpoint("/p", 3)),
                                          codec::encode_job(make_job("u"))};
  std::size_t decoded = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string bytes = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = bytes.empty() ? 0 : rng() % bytes.size();
      switch (rng() % 4) {
        case 0:
          if (!bytes.empty()) bytes[at] = static_cast<char>(rng());
          break;
        case 1:
          if (!bytes.empty()) bytes[at] = static_cast<char>(bytes[at] ^ (1 << (rng() % 8)));
          break;
        case 2:
          bytes.insert(at, 1, static_cast<char>(rng()));
          break;
        default:
          if (!bytes.empty()) bytes.erase(at, 1 + rng() % 8);
          break;
      }
    }
    if (auto c = codec::decode_checkpoint(bytes, "/p")) {
      ++decoded;
      BOOST_TEST(codec::encode_checkpoint(*c) == bytes);
    } else {
      BOOST_TEST(c.error() == store::make_error_code(errc::corrupt));
    }
    if (auto j = codec::decode_job(bytes, "u")) {
      ++decoded;
      BOOST_TEST(codec::encode_job(*j) == bytes);
    } else {
      BOOST_TEST(j.error() == store::make_error_code(errc::corrupt));
    }
  }
  // Flipped bits inside numbers decode fine; the loop must have seen both kinds.
  BOOST_TEST(decoded > 0u);
}

BOOST_AUTO_TEST_CASE(event_keys_are_big_endian_so_key_order_is_seq_order) {
  BOOST_TEST(codec::event_key(1) == "e\0\0\0\0\0\0\0\x01"s);
  BOOST_TEST(codec::event_key(0x0102030405060708) == "e\x01\x02\x03\x04\x05\x06\x07\x08"s);
  BOOST_TEST(codec::events_begin() == "e");
  BOOST_TEST(codec::events_end() == "f");
  BOOST_TEST(codec::event_seq_key() == "mevent_seq");
  const std::vector<std::uint64_t> seqs = {
      0,     1,        255,        256,        65535,
      65536, 1u << 31, 0xffffffff, 1ull << 32, std::numeric_limits<std::uint64_t>::max()};
  for (std::size_t i = 0; i < seqs.size(); ++i) {
    const auto key = codec::event_key(seqs[i]);
    BOOST_TEST((codec::events_begin() <= key && key < codec::events_end()));
    // Parenthesized: Boost.Test would compare the strings as (signed) chars.
    if (i > 0) BOOST_TEST((codec::event_key(seqs[i - 1]) < key), seqs[i - 1] << " < " << seqs[i]);
    auto back = codec::seq_from_event_key(key);
    BOOST_TEST_REQUIRE(back.has_value());
    BOOST_TEST(*back == seqs[i]);
  }
  // No other kind of key falls into the event range.
  for (const auto& key : {codec::job_key("e"), codec::checkpoint_key("e", "/p"),
                          codec::schema_key(), codec::event_seq_key()}) {
    BOOST_TEST(!(codec::events_begin() <= key && key < codec::events_end()), key);
  }
  expect_error(codec::seq_from_event_key(""), errc::corrupt);
  expect_error(codec::seq_from_event_key("e"), errc::corrupt);
  expect_error(codec::seq_from_event_key("e\0\0\0\0\0\0\0"s), errc::corrupt);
  expect_error(codec::seq_from_event_key("e\0\0\0\0\0\0\0\x01\0"s), errc::corrupt);
  expect_error(codec::seq_from_event_key("f\0\0\0\0\0\0\0\x01"s), errc::corrupt);
}

BOOST_AUTO_TEST_CASE(event_round_trips_and_is_pinned) {
  store::event e;
  e.seq = 77;
  e.job_uuid = "job-ü";
  e.type = "checkpoint.created";
  e.data = R"({"path":"/x\u0000","bytes":"\xff"})"s + "\0\xff"s;  // opaque: any bytes
  e.at_ns = std::numeric_limits<std::int64_t>::min();
  auto back = codec::decode_event(codec::encode_event(e), 77);
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(*back == e);

  store::event small;
  small.job_uuid = "u";
  small.type = "t";
  small.data = "{}";
  small.at_ns = 0x0102030405060708;
  BOOST_TEST(codec::encode_event(small) ==
             "\x01"                                 // format
             "\x01\0\0\0u"                          // job_uuid
             "\x01\0\0\0t"                          // type
             "\x02\0\0\0{}"                         // data
             "\x08\x07\x06\x05\x04\x03\x02\x01"s);  // at_ns

  const auto bytes = codec::encode_event(e);
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    expect_error(codec::decode_event(std::string_view(bytes).substr(0, n), 1), errc::corrupt);
  }
  expect_error(codec::decode_event(bytes + "x", 1), errc::corrupt);
  auto bad_format = bytes;
  bad_format[0] = 2;
  expect_error(codec::decode_event(bad_format, 1), errc::corrupt);

  BOOST_TEST(codec::encode_event_seq(0x0102) == "\x02\x01\0\0\0\0\0\0"s);
  for (const std::uint64_t v : {0ull, 1ull, 0xfedcba9876543210ull}) {
    auto seq = codec::decode_event_seq(codec::encode_event_seq(v));
    BOOST_TEST_REQUIRE(seq.has_value());
    BOOST_TEST(*seq == v);
  }
  expect_error(codec::decode_event_seq("\x01"), errc::corrupt);
  expect_error(codec::decode_event_seq(codec::encode_event_seq(1) + "x"), errc::corrupt);
}

BOOST_AUTO_TEST_CASE(printable_escapes_control_and_high_bytes) {
  BOOST_TEST(codec::printable("ca\0/p\xff\\"s) == "ca\\x00/p\\xff\\x5c");
}

// ================================================= Status mapping (pure)

BOOST_AUTO_TEST_CASE(rocksdb_status_maps_to_errc) {
  using rocksdb::Status;
  BOOST_TEST((store::to_errc(Status::Corruption("bad block")) == errc::corrupt));
  BOOST_TEST((store::to_errc(Status::IOError("While lock file: /x/LOCK",
                                             "Resource temporarily unavailable")) == errc::busy));
  BOOST_TEST((store::to_errc(Status::IOError("lock hold by current process, acquire time 1",
                                             "/x/LOCK: No locks available")) == errc::busy));
  BOOST_TEST((store::to_errc(Status::NoSpace("write failed")) == errc::io_error));
  BOOST_TEST((store::to_errc(Status::IOError("read failed")) == errc::io_error));
  BOOST_TEST((store::to_errc(Status::PathNotFound("MANIFEST-000005")) == errc::corrupt));
  BOOST_TEST((store::to_errc(Status::Busy()) == errc::busy));
  BOOST_TEST((store::to_errc(Status::TryAgain()) == errc::busy));
  BOOST_TEST((store::to_errc(Status::InvalidArgument("x")) == errc::invalid_argument));
  BOOST_TEST((store::to_errc(Status::NotSupported("zstd")) == errc::unknown_schema));
  BOOST_TEST((store::to_errc(Status::Aborted()) == errc::io_error));
}

BOOST_AUTO_TEST_CASE(error_messages_tell_the_operator_what_to_do) {
  BOOST_TEST(std::string(store::category().name()) == "ckptd.store");
  const auto newer = store::make_error_code(errc::newer_schema);
  BOOST_TEST(newer.message().find("--rebuild-index") != std::string::npos);
  BOOST_TEST(store::make_error_code(errc::corrupt).message().find("--rebuild-index") !=
             std::string::npos);
  for (int e = static_cast<int>(errc::newer_schema); e <= static_cast<int>(errc::invalid_argument);
       ++e) {
    const auto code = store::make_error_code(static_cast<errc>(e));
    BOOST_TEST((code.category() == store::category()));
    BOOST_TEST(code.message().find("unknown") != 0u);
    BOOST_TEST(code.message().size() > 40u);
  }
  // The enum converts implicitly, as is_error_code_enum promises.
  const boost::system::error_code implicit = errc::busy;
  BOOST_TEST(implicit == store::make_error_code(errc::busy));
}

// ================================================ the index (real RocksDB)

BOOST_FIXTURE_TEST_CASE(fresh_folder_is_created_empty_without_a_log_file, db_fixture) {
  {
    auto idx = open();
    auto all = idx->jobs();
    BOOST_TEST_REQUIRE(all.has_value());
    BOOST_TEST(all->empty());
    auto none = idx->find_job("nobody");
    BOOST_TEST_REQUIRE(none.has_value());
    BOOST_TEST(!none->has_value());
    auto empty = idx->checkpoints("nobody");
    BOOST_TEST_REQUIRE(empty.has_value());
    BOOST_TEST(empty->empty());
    BOOST_TEST(idx->flush().has_value());
  }
  BOOST_TEST(fs::exists(dir / "CURRENT"));
  for (const auto& entry : fs::directory_iterator(dir)) {
    // RocksDB's info LOG (and LOG.old.*) must never appear.
    BOOST_TEST(!entry.path().filename().string().starts_with("LOG"), entry.path());
  }
  // The schema key was written.
  auto db = open_raw();
  std::string value;
  BOOST_TEST_REQUIRE(db->Get(rocksdb::ReadOptions(), codec::schema_key(), &value).ok());
  BOOST_TEST(value == codec::encode_schema(store::index::schema_version));
}

// write_out() leaves nothing in the memtables: checkpoints and events are in
// table files (the WAL is empty), and everything reads back.
BOOST_FIXTURE_TEST_CASE(write_out_moves_everything_to_table_files, db_fixture) {
  const auto count_files = [&](std::string_view extension) {
    std::uintmax_t bytes = 0;
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != extension) continue;
      ++files;
      bytes += entry.file_size();
    }
    return std::pair{files, bytes};
  };
  auto idx = open();
  for (int n = 0; n < 50; ++n) BOOST_TEST_REQUIRE(idx->apply(created("j", n)).has_value());
  BOOST_TEST(count_files(".sst").first == 0u);  // all still in the memtables
  BOOST_TEST_REQUIRE(idx->write_out().has_value());
  BOOST_TEST(count_files(".sst").first == 2u);  // one per column family
  BOOST_TEST(count_files(".log").second == 0u);  // the WAL holds nothing more
  auto got = idx->checkpoints("j");
  BOOST_TEST_REQUIRE(got.has_value());
  BOOST_TEST(got->size() == 50u);
  auto events = idx->events_after(0, 100);
  BOOST_TEST_REQUIRE(events.has_value());
  BOOST_TEST(events->size() == 50u);
  BOOST_TEST_REQUIRE(idx->apply(created("j", 50)).has_value());
  idx.reset();
  auto again = open();
  BOOST_TEST(again->last_event_seq() == 51u);
}

// A rebuilt index's event log starts after a given seq, durably, and only
// while it has never given one out.
BOOST_FIXTURE_TEST_CASE(event_log_starts_after_a_given_seq, db_fixture) {
  constexpr std::uint64_t start = 1'795'000'000'000'000;
  {
    auto idx = open();
    expect_error(idx->start_events_after(0), errc::invalid_argument);
    BOOST_TEST_REQUIRE(idx->start_events_after(start).has_value());
    BOOST_TEST(idx->last_event_seq() == start);
    BOOST_TEST(idx->first_event_seq() == 0u);  // still no event
    expect_error(idx->start_events_after(7), errc::invalid_argument);
  }
  auto idx = open();  // the start survives a reopen before any event
  BOOST_TEST(idx->last_event_seq() == start);
  BOOST_TEST(idx->apply(created("j", 0)).value() == start + 1);
  BOOST_TEST(idx->apply(created("j", 1)).value() == start + 2);
  BOOST_TEST(idx->first_event_seq() == start + 1);
  auto events = idx->events_after(0, 10);
  BOOST_TEST_REQUIRE(events.has_value());
  BOOST_TEST(seqs_of(*events) == seq_range(start + 1, start + 2),
             boost::test_tools::per_element());
  expect_error(idx->start_events_after(start + 100), errc::invalid_argument);
  idx.reset();
  BOOST_TEST(open()->last_event_seq() == start + 2);
}

BOOST_FIXTURE_TEST_CASE(every_field_survives_a_reopen, db_fixture) {
  const auto full = full_checkpoint();
  auto bare = make_checkpoint("/train/j/ckpt-bare", -5);
  bare.metrics.reset();
  const store::job j{.uuid = "job-ü", .dir = "/train/ü", .first_seen_ns = -1};
  {
    auto idx = open();
    auto change = upsert_of(j);
    change.upserts = {full, bare};
    BOOST_TEST_REQUIRE(idx->apply(change).has_value());
    BOOST_TEST_REQUIRE(idx->flush().has_value());
  }
  auto idx = open();
  auto found = idx->find_job(j.uuid);
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST_REQUIRE(found->has_value());
  BOOST_TEST(**found == j);
  auto got = idx->checkpoints(j.uuid);
  BOOST_TEST_REQUIRE(got.has_value());
  // Key order is bytewise by path: "/ckpt/..." < "/train/...".
  const std::vector<store::checkpoint> expected = {full, bare};
  BOOST_TEST(*got == expected, boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(scans_are_isolated_between_prefix_sharing_jobs, db_fixture) {
  auto idx = open();
  // "a" is a prefix of "ab"; "a0" sorts between them bytewise.
  for (const std::string uuid : {"ab", "a", "a0", "b"}) {
    auto change = upsert_of(make_job(uuid));
    for (int i = 3; i >= 1; --i) {
      change.upserts.push_back(make_checkpoint("/" + uuid + "/ckpt-" + std::to_string(i), i));
    }
    BOOST_TEST_REQUIRE(idx->apply(change).has_value());
  }
  for (const std::string uuid : {"a", "ab", "a0", "b"}) {
    auto got = idx->checkpoints(uuid);
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST_REQUIRE(got->size() == 3u, uuid);
    for (int i = 0; i < 3; ++i) {
      // Ascending by path, whatever the insertion order.
      BOOST_TEST((*got)[static_cast<std::size_t>(i)].path ==
                 "/" + uuid + "/ckpt-" + std::to_string(i + 1));
    }
  }
  auto all = idx->jobs();
  BOOST_TEST_REQUIRE(all.has_value());
  std::vector<std::string> uuids;
  for (const auto& j : *all) uuids.push_back(j.uuid);
  const std::vector<std::string> expected = {"a", "a0", "ab", "b"};
  BOOST_TEST(uuids == expected, boost::test_tools::per_element());

  // Removing "a" leaves "ab" and "a0" whole.
  BOOST_TEST_REQUIRE(idx->apply(removal_of("a")).has_value());
  auto gone = idx->checkpoints("a");
  BOOST_TEST_REQUIRE(gone.has_value());
  BOOST_TEST(gone->empty());
  auto gone_job = idx->find_job("a");
  BOOST_TEST_REQUIRE(gone_job.has_value());
  BOOST_TEST(!gone_job->has_value());
  for (const std::string uuid : {"ab", "a0", "b"}) {
    auto kept = idx->checkpoints(uuid);
    BOOST_TEST_REQUIRE(kept.has_value());
    BOOST_TEST(kept->size() == 3u, uuid);
    auto kept_job = idx->find_job(uuid);
    BOOST_TEST_REQUIRE(kept_job.has_value());
    BOOST_TEST(kept_job->has_value());
  }
  auto left = idx->jobs();
  BOOST_TEST_REQUIRE(left.has_value());
  BOOST_TEST(left->size() == 3u);
}

BOOST_FIXTURE_TEST_CASE(apply_deletes_before_it_puts, db_fixture) {
  auto idx = open();
  auto first = upsert_of(make_job("j"));
  first.upserts = {make_checkpoint("/j/1", 1), make_checkpoint("/j/2", 2),
                   make_checkpoint("/j/3", 3)};
  BOOST_TEST_REQUIRE(idx->apply(first).has_value());

  // Upsert replaces by path; removing an unknown path is not an error; a path
  // both removed and upserted ends up upserted.
  auto rewritten = make_checkpoint("/j/2", 2);
  rewritten.fingerprint = "rewritten";
  auto both = make_checkpoint("/j/3", 33);
  auto second = change_of("j");
  second.upserts = {rewritten, both};
  second.removed_paths = {"/j/1", "/j/never", "/j/3"};
  BOOST_TEST_REQUIRE(idx->apply(second).has_value());
  auto got = idx->checkpoints("j");
  BOOST_TEST_REQUIRE(got.has_value());
  std::vector<store::checkpoint> expected = {rewritten, both};
  BOOST_TEST(*got == expected, boost::test_tools::per_element());

  // remove_job together with upserts: the job is replaced wholesale.
  auto replace = removal_of("j");
  replace.upsert_job = store::job{.uuid = "j", .dir = "/elsewhere", .first_seen_ns = 9};
  replace.upserts = {make_checkpoint("/j/9", 9)};
  BOOST_TEST_REQUIRE(idx->apply(replace).has_value());
  got = idx->checkpoints("j");
  BOOST_TEST_REQUIRE(got.has_value());
  expected = {make_checkpoint("/j/9", 9)};
  BOOST_TEST(*got == expected, boost::test_tools::per_element());
  auto found = idx->find_job("j");
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST_REQUIRE(found->has_value());
  BOOST_TEST((*found)->dir == "/elsewhere");

  // remove_job alone drops everything; an empty change is a no-op.
  BOOST_TEST_REQUIRE(idx->apply(removal_of("j")).has_value());
  BOOST_TEST_REQUIRE(idx->apply(change_of("j")).has_value());
  got = idx->checkpoints("j");
  BOOST_TEST_REQUIRE(got.has_value());
  BOOST_TEST(got->empty());
  auto all = idx->jobs();
  BOOST_TEST_REQUIRE(all.has_value());
  BOOST_TEST(all->empty());
}

BOOST_FIXTURE_TEST_CASE(invalid_changes_write_nothing, db_fixture) {
  auto idx = open();
  const auto valid_part = make_checkpoint("/ok", 1);
  const auto expect_nothing_written = [&] {
    auto all = idx->jobs();
    BOOST_TEST_REQUIRE(all.has_value());
    BOOST_TEST(all->empty());
    for (const auto uuid : {"j", "other"}) {
      auto got = idx->checkpoints(uuid);
      BOOST_TEST_REQUIRE(got.has_value());
      BOOST_TEST(got->empty());
    }
  };

  auto nul_uuid = change_of("j\0x"s);
  nul_uuid.upserts = {valid_part};
  expect_error(idx->apply(nul_uuid), errc::invalid_argument);
  auto empty_uuid = change_of("");
  empty_uuid.upserts = {valid_part};
  expect_error(idx->apply(empty_uuid), errc::invalid_argument);

  // One bad path spoils the whole change, including its valid parts.
  auto nul_path = upsert_of(make_job("j"));
  nul_path.upserts = {valid_part, make_checkpoint("/bad\0path"s, 2)};
  expect_error(idx->apply(nul_path), errc::invalid_argument);
  auto empty_path = upsert_of(make_job("j"));
  empty_path.upserts = {valid_part, make_checkpoint("", 2)};
  expect_error(idx->apply(empty_path), errc::invalid_argument);
  auto nul_removal = upsert_of(make_job("j"));
  nul_removal.removed_paths = {"/x\0"s};
  expect_error(idx->apply(nul_removal), errc::invalid_argument);
  auto mismatched = change_of("j");
  mismatched.upsert_job = make_job("other");
  expect_error(idx->apply(mismatched), errc::invalid_argument);
  expect_nothing_written();
  BOOST_TEST(logged_containing("apply()"));

  expect_error(idx->checkpoints("j\0"s), errc::invalid_argument);
  expect_error(idx->checkpoints(""), errc::invalid_argument);
  expect_error(idx->find_job("j\0"s), errc::invalid_argument);
}

BOOST_FIXTURE_TEST_CASE(everything_survives_reopen_with_and_without_flush, db_fixture) {
  std::vector<store::job> jobs;
  {
    auto idx = open();
    for (int n = 0; n < 50; ++n) {
      const auto uuid = "job-" + std::to_string(100 + n);
      jobs.push_back(make_job(uuid));
      auto change = upsert_of(jobs.back());
      for (int i = 0; i < 20; ++i) {
        change.upserts.push_back(make_checkpoint("/" + uuid + "/" + std::to_string(100 + i), i));
      }
      BOOST_TEST_REQUIRE(idx->apply(change).has_value());
      if (n == 25) BOOST_TEST_REQUIRE(idx->flush().has_value());
    }
  }
  for (int round = 0; round < 2; ++round) {
    auto idx = open();
    auto all = idx->jobs();
    BOOST_TEST_REQUIRE(all.has_value());
    BOOST_TEST(*all == jobs, boost::test_tools::per_element());
    for (const auto& j : jobs) {
      auto got = idx->checkpoints(j.uuid);
      BOOST_TEST_REQUIRE(got.has_value());
      BOOST_TEST(got->size() == 20u);
      BOOST_TEST(got->front() == make_checkpoint("/" + j.uuid + "/100", 0));
    }
  }
}

BOOST_FIXTURE_TEST_CASE(newer_schema_is_refused_untouched, db_fixture) {
  create_index();
  raw_put(codec::schema_key(), codec::encode_schema(store::index::schema_version + 1));
  const auto before = snapshot(dir);

  auto r = store::index::open(dir, sink());
  expect_error(r, errc::newer_schema);
  expect_unchanged(before, dir);
  show_log();
  BOOST_TEST(logged_containing("schema version " +
                               std::to_string(store::index::schema_version + 1)));
}

BOOST_FIXTURE_TEST_CASE(foreign_database_is_refused_untouched, db_fixture) {
  {
    auto db = open_raw(/*create=*/true);
    BOOST_TEST_REQUIRE(db->Put(rocksdb::WriteOptions(), "user:1", "alice").ok());
  }
  const auto before = snapshot(dir);
  expect_error(store::index::open(dir, sink()), errc::unknown_schema);
  expect_unchanged(before, dir);
  show_log();
  BOOST_TEST(logged_containing("user:1"));
}

BOOST_FIXTURE_TEST_CASE(foreign_database_with_column_families_is_refused_untouched, db_fixture) {
  {
    auto db = open_raw(/*create=*/true);
    rocksdb::ColumnFamilyHandle* cf = nullptr;
    BOOST_TEST_REQUIRE(db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "extra", &cf).ok());
    BOOST_TEST_REQUIRE(db->DestroyColumnFamilyHandle(cf).ok());
  }
  const auto before = snapshot(dir);
  expect_error(store::index::open(dir, sink()), errc::unknown_schema);
  expect_unchanged(before, dir);
  show_log();
}

BOOST_FIXTURE_TEST_CASE(empty_database_without_schema_is_adopted, db_fixture) {
  // What ckptd leaves if it stops between creating the database and writing
  // the schema key.
  open_raw(/*create=*/true).reset();
  {
    auto idx = open();
    BOOST_TEST_REQUIRE(idx->apply(upsert_of(make_job("j"))).has_value());
  }
  auto idx = open();
  auto found = idx->find_job("j");
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST(found->has_value());
}

BOOST_FIXTURE_TEST_CASE(garbled_manifest_is_refused_untouched, db_fixture) {
  create_index();
  const auto manifest = only_file_starting(dir, "MANIFEST-");
  std::string bytes = read_file(manifest);
  BOOST_TEST_REQUIRE(bytes.size() > 16u);
  for (std::size_t i = 8; i < bytes.size(); i += 3) bytes[i] = static_cast<char>(~bytes[i]);
  write_file(manifest, bytes);
  const auto before = snapshot(dir);

  expect_error(store::index::open(dir, sink()), errc::corrupt);
  expect_unchanged(before, dir);
  show_log();
  BOOST_TEST(!logged().empty());
}

BOOST_FIXTURE_TEST_CASE(truncated_current_is_refused_untouched, db_fixture) {
  create_index();
  fs::resize_file(dir / "CURRENT", 3);
  const auto before = snapshot(dir);
  expect_error(store::index::open(dir, sink()), errc::corrupt);
  expect_unchanged(before, dir);
  show_log();
}

BOOST_FIXTURE_TEST_CASE(current_naming_a_missing_manifest_is_refused_untouched, db_fixture) {
  create_index();
  write_file(dir / "CURRENT", "MANIFEST-999999\n");
  const auto before = snapshot(dir);
  expect_error(store::index::open(dir, sink()), errc::corrupt);
  expect_unchanged(before, dir);
  show_log();
}

BOOST_FIXTURE_TEST_CASE(undecodable_records_are_corrupt_not_crashes, db_fixture) {
  create_index();
  raw_put(codec::checkpoint_key("j1", "/train/j1/ckpt-2"), "\x01\xff");
  raw_put(codec::job_key("j2"), "");
  auto idx = open();
  expect_error(idx->checkpoints("j1"), errc::corrupt);
  expect_error(idx->find_job("j2"), errc::corrupt);
  expect_error(idx->jobs(), errc::corrupt);
  BOOST_TEST(logged_containing("does not decode"));
  // Other jobs stay readable, and a rewrite heals the record.
  auto j1 = idx->find_job("j1");
  BOOST_TEST_REQUIRE(j1.has_value());
  BOOST_TEST(j1->has_value());
  auto heal = change_of("j1");
  heal.upserts = {make_checkpoint("/train/j1/ckpt-2", 2)};
  BOOST_TEST_REQUIRE(idx->apply(heal).has_value());
  auto healed = idx->checkpoints("j1");
  BOOST_TEST_REQUIRE(healed.has_value());
  BOOST_TEST(healed->size() == 2u);
}

BOOST_FIXTURE_TEST_CASE(second_open_in_one_process_is_busy, db_fixture) {
  auto first = open();
  expect_error(store::index::open(dir, sink()), errc::busy);
  // Another spelling of the same folder is the same folder.
  const auto link = tmp.path / "link";
  fs::create_directory_symlink(dir, link);
  expect_error(store::index::open(link / ".", sink()), errc::busy);
  // The first is unharmed, and closing it frees the folder.
  BOOST_TEST_REQUIRE(first->apply(upsert_of(make_job("j"))).has_value());
  first.reset();
  auto again = open();
  auto found = again->find_job("j");
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST(found->has_value());
}

BOOST_FIXTURE_TEST_CASE(lock_held_by_another_process_is_busy_untouched, db_fixture) {
  create_index();
  const auto lock_file = (dir / "LOCK").string();
  int ready[2];
  int release[2];
  BOOST_TEST_REQUIRE(::pipe(ready) == 0);
  BOOST_TEST_REQUIRE(::pipe(release) == 0);
  const pid_t child = ::fork();
  BOOST_TEST_REQUIRE(child >= 0);
  if (child == 0) {
    // The child takes the lock exactly as RocksDB does (fcntl, whole file)
    // and holds it until the parent closes the pipe. Async-signal-safe only.
    ::close(ready[0]);
    ::close(release[1]);
    const int fd = ::open(lock_file.c_str(), O_RDWR);
    struct flock lock {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    const char ok = (fd >= 0 && ::fcntl(fd, F_SETLK, &lock) == 0) ? '1' : '0';
    if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
    char ignored;
    while (::read(release[0], &ignored, 1) > 0) {
    }
    ::_exit(0);
  }
  ::close(ready[1]);
  ::close(release[0]);
  char ok = '0';
  BOOST_TEST_REQUIRE(::read(ready[0], &ok, 1) == 1);
  BOOST_TEST_REQUIRE(ok == '1');
  const auto before = snapshot(dir);

  expect_error(store::index::open(dir, sink()), errc::busy);
  expect_unchanged(before, dir);
  show_log();
  BOOST_TEST(logged_containing("locked by process " + std::to_string(child)));

  ::close(release[1]);
  ::close(ready[0]);
  int status = 0;
  BOOST_TEST_REQUIRE(::waitpid(child, &status, 0) == child);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  // Once the other process is gone the index opens.
  auto idx = open();
  auto found = idx->find_job("j1");
  BOOST_TEST_REQUIRE(found.has_value());
  BOOST_TEST(found->has_value());
}

BOOST_FIXTURE_TEST_CASE(concurrent_writers_and_readers_agree, db_fixture) {
  auto idx = open();
  constexpr int writers = 4;
  constexpr int changes_per_writer = 50;
  std::vector<std::thread> threads;
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  const auto record_failure = [&](std::string what) {
    const std::lock_guard lock(failures_mutex);
    failures.push_back(std::move(what));
  };
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const auto uuid = "writer-" + std::to_string(w);
      for (int i = 0; i < changes_per_writer; ++i) {
        auto change = upsert_of(make_job(uuid));
        change.upserts = {make_checkpoint("/" + uuid + "/" + std::to_string(1000 + i), i)};
        if (auto r = idx->apply(change); !r) record_failure("apply: " + r.error().message());
        // Each job's checkpoints only ever grow, one per change: a scan must
        // never see a torn change or another writer's records.
        auto got = idx->checkpoints(uuid);
        if (!got) {
          record_failure("checkpoints: " + got.error().message());
        } else if (got->size() != static_cast<std::size_t>(i + 1)) {
          record_failure(uuid + " saw " + std::to_string(got->size()));
        }
        if (auto all = idx->jobs(); !all) record_failure("jobs: " + all.error().message());
      }
    });
  }
  for (auto& t : threads) t.join();
  BOOST_TEST(failures.empty(), (failures.empty() ? "" : failures.front()));
  auto all = idx->jobs();
  BOOST_TEST_REQUIRE(all.has_value());
  BOOST_TEST(all->size() == static_cast<std::size_t>(writers));
}

// ============================================================ event log

BOOST_FIXTURE_TEST_CASE(event_seqs_are_consecutive_and_survive_reopen, db_fixture) {
  std::uint64_t expected_last = 0;
  {
    auto idx = open();
    BOOST_TEST(idx->last_event_seq() == 0u);
    BOOST_TEST(idx->first_event_seq() == 0u);
    // A change without events takes no seq.
    auto no_events = upsert_of(make_job("j"));
    auto r = idx->apply(no_events);
    BOOST_TEST_REQUIRE(r.has_value());
    BOOST_TEST(*r == 0u);
    for (int i = 0; i < 300; ++i) {
      auto change = created("j", i);
      // 1 to 3 events per change; the caller's seq is ignored.
      for (int extra = 0; extra < i % 3; ++extra) {
        change.events.push_back(event_of("job.status", "{}"));
        change.events.back().seq = 12345;
      }
      auto applied = idx->apply(change);
      BOOST_TEST_REQUIRE(applied.has_value());
      expected_last += change.events.size();
      BOOST_TEST_REQUIRE(*applied == expected_last);
      BOOST_TEST(idx->last_event_seq() == expected_last);
      BOOST_TEST(idx->first_event_seq() == 1u);
    }
  }
  for (int round = 0; round < 2; ++round) {
    auto idx = open();
    BOOST_TEST(idx->last_event_seq() == expected_last);
    BOOST_TEST(idx->first_event_seq() == 1u);
    const auto events = all_events(*idx);
    BOOST_TEST(events.size() == expected_last);
    auto next = idx->apply(created("j", 1000 + round));
    BOOST_TEST_REQUIRE(next.has_value());
    BOOST_TEST(*next == ++expected_last);
  }
}

BOOST_FIXTURE_TEST_CASE(event_fields_round_trip_and_defaults_are_filled, db_fixture) {
  auto idx = open();
  auto change = upsert_of(make_job("j"));
  change.events = {event_of("job.status", R"({"status":"in_progress"})", 42),
                   event_of("checkpoint.created", "{\"a\":\n1}\0x"s)};
  change.events[0].job_uuid = "j";  // explicit and equal: fine
  const auto before = std::chrono::system_clock::now();
  BOOST_TEST_REQUIRE(idx->apply(change).has_value());
  const auto after = std::chrono::system_clock::now();
  const auto events = all_events(*idx);
  BOOST_TEST_REQUIRE(events.size() == 2u);
  BOOST_TEST(events[0].seq == 1u);
  BOOST_TEST(events[0].job_uuid == "j");
  BOOST_TEST(events[0].type == "job.status");
  BOOST_TEST(events[0].data == R"({"status":"in_progress"})");
  BOOST_TEST(events[0].at_ns == 42);  // the caller's time is kept
  BOOST_TEST(events[1].seq == 2u);
  BOOST_TEST(events[1].job_uuid == "j");  // empty means the change's job
  BOOST_TEST(events[1].data == "{\"a\":\n1}\0x"s);
  // at_ns 0 means "now".
  const auto ns = [](auto t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  };
  BOOST_TEST(events[1].at_ns >= ns(before));
  BOOST_TEST(events[1].at_ns <= ns(after));
}

BOOST_FIXTURE_TEST_CASE(events_after_pages_in_seq_order, db_fixture) {
  auto idx = open();
  // Two jobs interleaved: the log is one sequence across jobs.
  for (int i = 0; i < 125; ++i) {
    BOOST_TEST_REQUIRE(idx->apply(created("a", i)).has_value());
    BOOST_TEST_REQUIRE(idx->apply(created("b", i)).has_value());
  }
  BOOST_TEST_REQUIRE(idx->last_event_seq() == 250u);

  std::vector<store::event> paged;
  std::vector<std::size_t> page_sizes;
  std::uint64_t after = 0;
  for (;;) {
    auto page = idx->events_after(after, 100);
    BOOST_TEST_REQUIRE(page.has_value());
    if (page->empty()) break;
    page_sizes.push_back(page->size());
    after = page->back().seq;
    paged.insert(paged.end(), page->begin(), page->end());
  }
  const std::vector<std::size_t> expected_sizes = {100, 100, 50};
  BOOST_TEST(page_sizes == expected_sizes, boost::test_tools::per_element());
  BOOST_TEST(seqs_of(paged) == seq_range(1, 250), boost::test_tools::per_element());
  BOOST_TEST(paged[0].job_uuid == "a");
  BOOST_TEST(paged[1].job_uuid == "b");
  BOOST_TEST(paged[249].data == R"({"n":124})");

  // Resuming from the middle, the end, and past the end.
  auto mid = idx->events_after(137, 3);
  BOOST_TEST_REQUIRE(mid.has_value());
  BOOST_TEST(seqs_of(*mid) == seq_range(138, 140), boost::test_tools::per_element());
  for (const std::uint64_t at : {250ull, 251ull, 1ull << 40, ~0ull}) {
    auto none = idx->events_after(at, 10);
    BOOST_TEST_REQUIRE(none.has_value());
    BOOST_TEST(none->empty(), at);
  }
  auto zero_limit = idx->events_after(0, 0);
  BOOST_TEST_REQUIRE(zero_limit.has_value());
  BOOST_TEST(zero_limit->empty());
}

BOOST_FIXTURE_TEST_CASE(retention_trims_the_oldest_events, db_fixture) {
  constexpr std::uint64_t keep = 200;
  constexpr std::uint64_t slack = 2;  // 1% of 200
  const store::open_options options{.event_retention = keep};
  {
    auto r = store::index::open(dir, sink(), options);
    BOOST_TEST_REQUIRE(r.has_value());
    auto& idx = **r;
    for (std::uint64_t i = 1; i <= 1000; ++i) {
      BOOST_TEST_REQUIRE(idx.apply(created("j", static_cast<std::int64_t>(i))).has_value());
      const std::uint64_t held = idx.last_event_seq() - idx.first_event_seq() + 1;
      BOOST_TEST_REQUIRE(held == std::min(i, held));
      BOOST_TEST_REQUIRE(held <= keep + slack);
      BOOST_TEST_REQUIRE(held >= std::min(i, keep));
    }
    // Trimmed events are gone from the log, not only hidden.
    const auto events = all_events(idx);
    BOOST_TEST(events.size() >= keep);
    BOOST_TEST(events.back().seq == 1000u);
    BOOST_TEST(events.back().data == R"({"n":1000})");
    auto stale = idx.events_after(1, 5);  // a client that fell far behind
    BOOST_TEST_REQUIRE(stale.has_value());
    BOOST_TEST_REQUIRE(!stale->empty());
    BOOST_TEST(stale->front().seq == idx.first_event_seq());
    BOOST_TEST(stale->front().seq > 2u);  // the gap it must be told about
    // Checkpoints are not subject to event retention.
    auto cps = idx.checkpoints("j");
    BOOST_TEST_REQUIRE(cps.has_value());
    BOOST_TEST(cps->size() == 1000u);

    // One change bigger than the bound keeps only its newest events.
    auto burst = change_of("j");
    for (int i = 0; i < 500; ++i) burst.events.push_back(event_of("job.status", std::to_string(i)));
    auto last = idx.apply(burst);
    BOOST_TEST_REQUIRE(last.has_value());
    BOOST_TEST(*last == 1500u);
    BOOST_TEST(idx.first_event_seq() == 1500u - keep + 1);
    const auto after_burst = all_events(idx);
    BOOST_TEST_REQUIRE(after_burst.size() == keep);
    BOOST_TEST(after_burst.front().data == "300");
  }
  // The bound and the extent hold across a reopen, counted from the database.
  auto r = store::index::open(dir, sink(), options);
  BOOST_TEST_REQUIRE(r.has_value());
  BOOST_TEST((*r)->first_event_seq() == 1500u - keep + 1);
  BOOST_TEST((*r)->last_event_seq() == 1500u);
  BOOST_TEST(all_events(**r).size() == keep);

  expect_error(store::index::open(tmp.path / "other", sink(), {.event_retention = 0}),
               errc::invalid_argument);
}

BOOST_FIXTURE_TEST_CASE(seq_never_goes_back_even_when_the_log_is_trimmed_to_one, db_fixture) {
  const store::open_options keep_one{.event_retention = 1};
  for (std::uint64_t round = 1; round <= 3; ++round) {
    auto r = store::index::open(dir, sink(), keep_one);
    BOOST_TEST_REQUIRE(r.has_value());
    for (int i = 0; i < 10; ++i) {
      BOOST_TEST_REQUIRE((*r)->apply(created("j", i)).has_value());
    }
    BOOST_TEST((*r)->last_event_seq() == round * 10);
    BOOST_TEST((*r)->last_event_seq() - (*r)->first_event_seq() + 1 <= 2u);
  }
  // Without the counter key the last event key still gives the seq.
  {
    auto db = open_raw();
    BOOST_TEST_REQUIRE(db->Delete(rocksdb::WriteOptions(), codec::event_seq_key()).ok());
  }
  auto idx = open();
  BOOST_TEST(idx->last_event_seq() == 30u);
  auto next = idx->apply(created("j", 99));
  BOOST_TEST_REQUIRE(next.has_value());
  BOOST_TEST(*next == 31u);
}

BOOST_FIXTURE_TEST_CASE(events_survive_a_kill_9, db_fixture) {
  // What kill -9 leaves is what the files hold: every apply() has handed its
  // WAL record to the kernel, and a killed process loses nothing the kernel
  // has. Copying the folder while the index is open (no close, no WAL sync)
  // is that state, without forking a process that has RocksDB threads.
  const auto crashed = tmp.path / "crashed";
  std::uint64_t last = 0;
  {
    auto idx = open();
    for (int i = 0; i < 50; ++i) {
      auto r = idx->apply(created("j", i));
      BOOST_TEST_REQUIRE(r.has_value());
      last = *r;
    }
    fs::copy(dir, crashed, fs::copy_options::recursive);
  }
  auto r = store::index::open(crashed, sink());
  BOOST_TEST_REQUIRE(r.has_value());
  auto& idx = **r;
  BOOST_TEST(idx.last_event_seq() == last);
  BOOST_TEST(all_events(idx).size() == last);
  auto cps = idx.checkpoints("j");
  BOOST_TEST_REQUIRE(cps.has_value());
  BOOST_TEST(cps->size() == 50u);
  auto next = idx.apply(created("j", 50));
  BOOST_TEST_REQUIRE(next.has_value());
  BOOST_TEST(*next == last + 1);
}

BOOST_FIXTURE_TEST_CASE(invalid_events_spoil_the_whole_change, db_fixture) {
  auto idx = open();
  const auto with_event = [](store::event e) {
    auto change = upsert_of(make_job("j"));
    change.upserts = {make_checkpoint("/j/1", 1)};
    change.events = {event_of("checkpoint.created", "{}"), std::move(e)};
    return change;
  };
  auto other_job = event_of("job.status", "{}");
  other_job.job_uuid = "other";
  expect_error(idx->apply(with_event(other_job)), errc::invalid_argument);
  for (const auto& type : {""s, "a\nb"s, "a\rb"s, "a\0b"s}) {
    expect_error(idx->apply(with_event(event_of(type, "{}"))), errc::invalid_argument);
  }
  // Neither the checkpoint nor any event was written, and no seq was used.
  auto cps = idx->checkpoints("j");
  BOOST_TEST_REQUIRE(cps.has_value());
  BOOST_TEST(cps->empty());
  BOOST_TEST(idx->last_event_seq() == 0u);
  BOOST_TEST(all_events(*idx).empty());
  auto ok = idx->apply(with_event(event_of("job.status", "{}")));
  BOOST_TEST_REQUIRE(ok.has_value());
  BOOST_TEST(*ok == 2u);
}

BOOST_FIXTURE_TEST_CASE(events_commit_in_seq_order_under_concurrent_writers, db_fixture) {
  auto idx = open();
  constexpr int writers = 4;
  constexpr int changes_per_writer = 100;
  std::atomic<bool> done{false};
  std::mutex failures_mutex;
  std::vector<std::string> failures;
  const auto record_failure = [&](std::string what) {
    const std::lock_guard lock(failures_mutex);
    failures.push_back(std::move(what));
  };
  // A reader following the log like an SSE client: it must never see a gap,
  // which it would if seq n+1 could commit before n.
  std::thread reader([&] {
    std::uint64_t after = 0;
    while (!done.load() || after < idx->last_event_seq()) {
      auto page = idx->events_after(after, 1000);
      if (!page) {
        record_failure("events_after: " + page.error().message());
        return;
      }
      for (const auto& e : *page) {
        if (e.seq != after + 1) {
          record_failure("after " + std::to_string(after) + " came " + std::to_string(e.seq));
          return;
        }
        after = e.seq;
        // The event's checkpoint was written in the same batch, so it is
        // already visible.
        auto cps = idx->checkpoints(e.job_uuid);
        if (!cps || cps->empty()) record_failure("event " + std::to_string(e.seq) + " alone");
      }
    }
  });
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const auto uuid = "writer-" + std::to_string(w);
      std::uint64_t previous = 0;
      for (int i = 0; i < changes_per_writer; ++i) {
        auto r = idx->apply(created(uuid, i));
        if (!r) {
          record_failure("apply: " + r.error().message());
        } else if (*r <= previous) {
          record_failure(uuid + " got seq " + std::to_string(*r) + " after " +
                         std::to_string(previous));
        } else {
          previous = *r;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  reader.join();
  BOOST_TEST(failures.empty(), (failures.empty() ? "" : failures.front()));
  BOOST_TEST(idx->last_event_seq() == static_cast<std::uint64_t>(writers * changes_per_writer));
  // Each writer's events are in its own apply order.
  const auto events = all_events(*idx);
  std::map<std::string, int> next_n;
  for (const auto& e : events) {
    const int n = next_n[e.job_uuid]++;
    BOOST_TEST(e.data == R"({"n":)" + std::to_string(n) + "}", e);
  }
}

// An index written by a ckptd of schema 1, events in the default family:
// open() moves them into their own family (in several batches), and
// nothing else changes.
BOOST_FIXTURE_TEST_CASE(schema_1_events_move_to_their_own_family, db_fixture) {
  constexpr std::uint64_t count = 2500;
  const auto job = make_job("j");
  const auto checkpoint = make_checkpoint("/j/ckpt-1", 1);
  {
    auto db = open_raw(/*create=*/true);
    rocksdb::WriteBatch batch;
    BOOST_TEST_REQUIRE(batch.Put(codec::schema_key(), codec::encode_schema(1)).ok());
    BOOST_TEST_REQUIRE(batch.Put(codec::job_key("j"), codec::encode_job(job)).ok());
    BOOST_TEST_REQUIRE(
        batch.Put(codec::checkpoint_key("j", checkpoint.path), codec::encode_checkpoint(checkpoint))
            .ok());
    for (std::uint64_t n = 1; n <= count; ++n) {
      auto e = event_of("checkpoint.created", R"({"n":)" + std::to_string(n) + "}", 7);
      e.job_uuid = "j";
      BOOST_TEST_REQUIRE(batch.Put(codec::event_key(n), codec::encode_event(e)).ok());
    }
    BOOST_TEST_REQUIRE(batch.Put(codec::event_seq_key(), codec::encode_event_seq(count)).ok());
    BOOST_TEST_REQUIRE(db->Write(rocksdb::WriteOptions(), &batch).ok());
  }
  const auto check = [&](store::index& idx) {
    BOOST_TEST(idx.first_event_seq() == 1u);
    BOOST_TEST(idx.last_event_seq() == count);
    auto events = idx.events_after(0, count + 10);
    BOOST_TEST_REQUIRE(events.has_value());
    BOOST_TEST_REQUIRE(events->size() == count);
    for (std::uint64_t n = 1; n <= count; ++n) {
      const auto& e = (*events)[n - 1];
      BOOST_TEST(e.seq == n);
      BOOST_TEST(e.job_uuid == "j");
      BOOST_TEST(e.data == R"({"n":)" + std::to_string(n) + "}");
    }
    auto got = idx.checkpoints("j");
    BOOST_TEST_REQUIRE(got.has_value());
    BOOST_TEST(*got == std::vector<store::checkpoint>{checkpoint}, boost::test_tools::per_element());
  };
  {
    auto idx = open();
    check(*idx);
    BOOST_TEST(logged_containing("moved 2500 events"));
  }
  {
    // Every event is in the event family now, none is left behind.
    auto db = open_raw();
    std::string value;
    BOOST_TEST_REQUIRE(db->Get(rocksdb::ReadOptions(), codec::schema_key(), &value).ok());
    BOOST_TEST(value == codec::encode_schema(store::index::schema_version));
    std::unique_ptr<rocksdb::Iterator> main(db->NewIterator(rocksdb::ReadOptions()));
    main->Seek(codec::events_begin());
    BOOST_TEST((!main->Valid() || main->key().ToString() >= codec::events_end()));
    std::unique_ptr<rocksdb::Iterator> events(
        db->NewIterator(rocksdb::ReadOptions(), db.family("events")));
    std::uint64_t n = 0;
    for (events->SeekToFirst(); events->Valid(); events->Next()) ++n;
    BOOST_TEST(n == count);
  }
  {
    const std::lock_guard lock(*lines_mutex);
    lines->clear();
  }
  auto idx = open();
  check(*idx);
  BOOST_TEST(!logged_containing("moved"));
  auto next = idx->apply(created("j", 5));
  BOOST_TEST_REQUIRE(next.has_value());
  BOOST_TEST(*next == count + 1);
}

BOOST_FIXTURE_TEST_CASE(undecodable_events_are_corrupt_not_crashes, db_fixture) {
  {
    auto idx = open();
    BOOST_TEST_REQUIRE(idx->apply(created("j", 1)).has_value());
  }
  raw_put(codec::event_key(2), "\x01\xff", "events");
  {
    auto idx = open();
    BOOST_TEST(idx->last_event_seq() == 2u);  // the key counts: seq 2 is never reused
    auto first = idx->events_after(0, 1);
    BOOST_TEST_REQUIRE(first.has_value());
    BOOST_TEST(first->size() == 1u);
    expect_error(idx->events_after(0, 10), errc::corrupt);
    BOOST_TEST(logged_containing("does not decode"));
  }
  raw_put(codec::event_seq_key(), "x");
  expect_error(store::index::open(dir, sink()), errc::corrupt);
}

// ======================================================= full-disk recovery

BOOST_FIXTURE_TEST_CASE(full_volume_fails_writes_keeps_reads_and_heals, db_fixture) {
  if (::geteuid() != 0) {
    BOOST_TEST_MESSAGE("skipped: mounting a small tmpfs needs root");
    return;
  }
  const tmpfs_mount volume(tmp.path / "small", "size=2m");
  if (volume.error != 0) {
    BOOST_TEST_MESSAGE("skipped: cannot mount a tmpfs: " << std::strerror(volume.error));
    return;
  }
  const auto small_dir = volume.dir / "index";
  const auto filler = volume.dir / "filler";
  // A change of ~200 KiB: several tmpfs pages, so a full volume cannot take it.
  const auto big = [](int n) {
    auto change = created("j", n);
    change.upserts.front().fingerprint = std::string(200 << 10, static_cast<char>('a' + n % 26));
    return change;
  };
  {
    auto opened = store::index::open(small_dir, sink());
    BOOST_TEST_REQUIRE(opened.has_value());
    auto& idx = **opened;
    BOOST_TEST_REQUIRE(idx.apply(upsert_of(make_job("j"))).has_value());
    BOOST_TEST_REQUIRE(idx.apply(created("j", 0)).has_value());
    BOOST_TEST(idx.healthy());

    BOOST_TEST_MESSAGE("filler took " << fill_volume(filler) << " bytes");
    // Writes that still fit in a WAL page already allocated may succeed; a
    // big one cannot. What succeeded must survive; what failed must not.
    int applied = 1;  // changes 0..applied-1 are in
    boost::system::result<std::uint64_t> failed = 0;
    for (int attempt = 0; attempt < 20; ++attempt) {
      failed = idx.apply(big(applied));
      if (!failed) break;
      ++applied;
    }
    expect_error(failed, errc::io_error);  // and the process did not abort
    BOOST_TEST(!idx.healthy());
    const auto seq_before = idx.last_event_seq();
    BOOST_TEST(seq_before == static_cast<std::uint64_t>(applied));

    // Reads keep answering from what is indexed, before and after the next
    // write's reopen attempt (which still finds the volume full).
    const auto expect_readable = [&] {
      auto cps = idx.checkpoints("j");
      BOOST_TEST_REQUIRE(cps.has_value(), cps.error().message());
      BOOST_TEST(cps->size() == static_cast<std::size_t>(applied));
      auto found = idx.find_job("j");
      BOOST_TEST_REQUIRE(found.has_value());
      BOOST_TEST(found->has_value());
      auto jobs = idx.jobs();
      BOOST_TEST_REQUIRE(jobs.has_value());
      BOOST_TEST(jobs->size() == 1u);
      BOOST_TEST(all_events(idx).size() == seq_before);
    };
    expect_readable();
    expect_error(idx.apply(big(applied)), errc::io_error);
    BOOST_TEST(!idx.healthy());
    expect_readable();
    expect_error(idx.flush(), errc::io_error);
    expect_readable();
    BOOST_TEST(logged_containing("writes are failing"));
    // An outage is logged once, not once per retry: a caller retrying for
    // hours must not fill the journal.
    const auto lines_so_far = logged().size();
    for (int retry = 0; retry < 5; ++retry) expect_error(idx.apply(big(applied)), errc::io_error);
    BOOST_TEST(logged().size() == lines_so_far, "retries were logged:\n" << logged().back());

    // Space returns: the next write reopens the index and goes through, and
    // the seq continues where the successful writes left it.
    fs::remove(filler);
    auto healed = idx.apply(big(applied));
    BOOST_TEST_REQUIRE(healed.has_value(), healed.error().message());
    BOOST_TEST(*healed == seq_before + 1);
    BOOST_TEST(idx.healthy());
    BOOST_TEST(logged_containing("writes work again"));
    ++applied;
    BOOST_TEST_REQUIRE(idx.flush().has_value());
    auto cps = idx.checkpoints("j");
    BOOST_TEST_REQUIRE(cps.has_value());
    BOOST_TEST(cps->size() == static_cast<std::size_t>(applied));
  }
  // Everything written is there after a reopen, the failed changes are not,
  // and no seq was spent on them.
  auto idx = store::index::open(small_dir, sink());
  BOOST_TEST_REQUIRE(idx.has_value());
  auto cps = (*idx)->checkpoints("j");
  BOOST_TEST_REQUIRE(cps.has_value());
  const auto events = all_events(**idx);
  BOOST_TEST(events.size() == cps->size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    BOOST_TEST(events[i].data == R"({"n":)" + std::to_string(i) + "}");
    BOOST_TEST(cps->at(i).epoch == static_cast<std::int64_t>(i));
  }
  show_log();
}

// ======================================================== move_aside

BOOST_FIXTURE_TEST_CASE(move_aside_renames_and_never_replaces, db_fixture) {
  create_index();
  // Empty folders already holding the names the next seconds would get: a
  // plain rename() would silently replace them.
  const auto now = std::time(nullptr);
  for (std::time_t t = now; t <= now + 2; ++t) {
    fs::create_directory(dir.string() + ".broken-" + utc_stamp(t));
  }
  const auto before = snapshot(dir);
  auto moved = store::index::move_aside(dir, sink());
  BOOST_TEST_REQUIRE(moved.has_value(), moved.error().message());
  show_log();
  const std::regex name(R"(index\.broken-\d{8}T\d{6}Z-2)");
  BOOST_TEST(std::regex_match(moved->filename().string(), name), *moved);
  BOOST_TEST(moved->parent_path() == tmp.path);
  BOOST_TEST(!fs::exists(dir));
  expect_unchanged(before, *moved);
  for (std::time_t t = now; t <= now + 2; ++t) {
    BOOST_TEST(fs::is_empty(dir.string() + ".broken-" + utc_stamp(t)));
  }
  // The moved index still opens and holds its data; a fresh one starts in dir.
  {
    auto old = store::index::open(*moved, sink());
    BOOST_TEST_REQUIRE(old.has_value());
    auto found = (*old)->find_job("j1");
    BOOST_TEST_REQUIRE(found.has_value());
    BOOST_TEST(found->has_value());
  }
  auto fresh = open();
  auto all = fresh->jobs();
  BOOST_TEST_REQUIRE(all.has_value());
  BOOST_TEST(all->empty());
}

BOOST_FIXTURE_TEST_CASE(move_aside_without_a_collision_uses_the_plain_name, db_fixture) {
  create_index();
  auto moved = store::index::move_aside(dir.string() + "/");  // trailing slash: same folder
  BOOST_TEST_REQUIRE(moved.has_value(), moved.error().message());
  BOOST_TEST(
      std::regex_match(moved->filename().string(), std::regex(R"(index\.broken-\d{8}T\d{6}Z)")),
      *moved);
  BOOST_TEST(fs::exists(*moved / "CURRENT"));
  BOOST_TEST(!fs::exists(dir));
}

BOOST_FIXTURE_TEST_CASE(move_aside_refuses_an_open_or_missing_index, db_fixture) {
  {
    auto idx = open();
    BOOST_TEST_REQUIRE(idx->apply(upsert_of(make_job("j"))).has_value());
    expect_error(store::index::move_aside(dir, sink()), errc::busy);
    BOOST_TEST(fs::exists(dir / "CURRENT"));
    auto found = idx->find_job("j");  // unharmed
    BOOST_TEST_REQUIRE(found.has_value());
    BOOST_TEST(found->has_value());
  }
  expect_error(store::index::move_aside(tmp.path / "missing", sink()), errc::io_error);
  BOOST_TEST(logged_containing("missing"));
}

BOOST_FIXTURE_TEST_CASE(move_aside_through_a_symlink_moves_the_real_folder, db_fixture) {
  create_index();
  const auto link = tmp.path / "link";
  fs::create_directory_symlink(dir, link);
  auto moved = store::index::move_aside(link, sink());
  BOOST_TEST_REQUIRE(moved.has_value(), moved.error().message());
  BOOST_TEST(moved->parent_path() == tmp.path);
  BOOST_TEST(moved->filename().string().starts_with("index.broken-"));
  BOOST_TEST(fs::exists(*moved / "CURRENT"));
  // The link is left alone and resolves to an empty folder again, where
  // open() builds a fresh index on the same volume.
  BOOST_TEST(fs::is_symlink(link));
  BOOST_TEST(fs::is_directory(dir));
  BOOST_TEST(fs::is_empty(dir));
  auto fresh = store::index::open(link, sink());
  BOOST_TEST_REQUIRE(fresh.has_value());
  BOOST_TEST(fs::exists(dir / "CURRENT"));
}

BOOST_AUTO_TEST_SUITE_END()
