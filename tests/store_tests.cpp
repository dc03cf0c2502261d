// store_tests: the codec and the Status mapping as pure functions first, then
// the index against a real RocksDB in a fresh temporary folder per test.

#include <ckptd/store.hpp>

// store's private headers (store/src is on the tests' include path).
#include "codec.hpp"
#include "status.hpp"

#include <boost/test/unit_test.hpp>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
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
            << " first_seen_ns=" << j.first_seen_ns << "}";
}
}  // namespace ckptd::store

namespace {

namespace fs = std::filesystem;
namespace store = ckptd::store;
namespace codec = ckptd::store::codec;
using store::errc;
using namespace std::string_literals;

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
  [[nodiscard]] std::unique_ptr<rocksdb::DB> open_raw(bool create = false) const {
    rocksdb::Options options;
    options.create_if_missing = create;
    rocksdb::DB* raw = nullptr;
    const auto s = rocksdb::DB::Open(options, dir.string(), &raw);
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
    return std::unique_ptr<rocksdb::DB>(raw);
  }
  void raw_put(std::string_view key, std::string_view value) const {
    auto db = open_raw();
    const auto s = db->Put(rocksdb::WriteOptions(), key, value);
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
  const store::job j{.uuid = "u", .dir = "/jobs/ü", .first_seen_ns = -7};
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
             "\x08\x07\x06\x05\x04\x03\x02\x01"s);
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
  BOOST_TEST(logged_containing("schema version 2"));
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

BOOST_AUTO_TEST_SUITE_END()
