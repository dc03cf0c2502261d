#pragma once
// A ckptd index folder opened with plain RocksDB, for tests that write or
// inspect keys behind the index's back (a newer schema, a damaged record).
// Header-only: the tests that use it link RocksDB themselves.

#include <boost/test/unit_test.hpp>

#include <rocksdb/db.h>
#include <rocksdb/options.h>

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ckptd::test {

// A database opened with plain RocksDB and all of its column families, whose
// handles are released before it closes (members go in reverse order).
struct raw_db {
  std::unique_ptr<rocksdb::DB> db;
  std::map<std::string, std::unique_ptr<rocksdb::ColumnFamilyHandle>> families;

  static raw_db open(const std::filesystem::path& dir, bool create = false) {
    rocksdb::Options options;
    options.create_if_missing = create;
    std::vector<std::string> names;
    if (!rocksdb::DB::ListColumnFamilies(options, dir.string(), &names).ok()) {
      names = {rocksdb::kDefaultColumnFamilyName};  // a database still to create
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& name : names) descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    const auto s = rocksdb::DB::Open(options, dir.string(), descriptors, &handles, &raw);
    BOOST_TEST_REQUIRE(s.ok(), s.ToString());
    raw_db out;
    out.db.reset(raw);
    for (std::size_t i = 0; i < names.size(); ++i) out.families[names[i]].reset(handles[i]);
    return out;
  }
  rocksdb::DB* operator->() const { return db.get(); }
  rocksdb::ColumnFamilyHandle* family(const std::string& name) const {
    const auto it = families.find(name);
    BOOST_TEST_REQUIRE((it != families.end()), "no column family " << name);
    return it->second.get();
  }
  void reset() {
    families.clear();
    db.reset();
  }
};

}  // namespace ckptd::test
