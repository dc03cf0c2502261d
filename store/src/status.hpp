#pragma once
// The one translation of RocksDB's Status into ckptd::store::errc. Kept apart
// from index.cpp so that the mapping is unit-tested with hand-built statuses.

#include <ckptd/store.hpp>

#include <rocksdb/status.h>

namespace ckptd::store {

// Precondition: !s.ok().
[[nodiscard]] errc to_errc(const rocksdb::Status& s) noexcept;

}  // namespace ckptd::store
