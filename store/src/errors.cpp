// The errc category. Messages are for the operator reading the journal: each
// says what to do, not only what went wrong.

#include <ckptd/store.hpp>

#include <string>

namespace ckptd::store {
namespace {

// error_category's destructor is protected and non-virtual by design (a
// category is never deleted through a pointer), which GCC's -Wnon-virtual-dtor
// flags on every derived class; Boost's own categories silence it the same way.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class store_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "ckptd.store"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::newer_schema:
        return "the index was written by a newer ckptd; upgrade ckptd, or start with "
               "--rebuild-index (or move the --db folder aside) to rebuild it from the "
               "checkpoint folders";
      case errc::unknown_schema:
        return "the index folder holds a database ckptd did not write; give ckptd its own "
               "empty folder with --db (this one is left untouched)";
      case errc::corrupt:
        return "the index database is damaged; start with --rebuild-index (or move the --db "
               "folder aside) to rebuild it from the checkpoint folders";
      case errc::io_error:
        return "the index could not be read or written; check free space and disk health on "
               "the index volume (ckptd keeps serving what it has indexed and resumes writing "
               "by itself once a write succeeds)";
      case errc::busy:
        return "the index is in use by another process (or already open in this one); stop "
               "the other ckptd using this --db folder, or give each instance its own";
      case errc::invalid_argument:
        return "a job uuid or checkpoint path cannot be stored in the index (empty, holds a "
               "NUL byte, or does not match its job); this is a bug in the caller";
    }
    return "unknown ckptd index error " + std::to_string(value);
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& category() noexcept {
  static const store_category instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), category()};
}

}  // namespace ckptd::store
