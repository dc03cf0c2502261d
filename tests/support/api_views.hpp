#pragma once
// What black-box tests ask the daemon most: a job's checkpoints as the
// artifacts route shows them, and whether the daemon is ready.

#include <boost/json/array.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ckptd::test {

// The artifacts route of `job` (no escaping: test job names are plain).
std::string artifacts_target(const std::string& job);

// The job's checkpoints as the API shows them; an empty array for 404.
boost::json::array checkpoints_of(std::uint16_t port, const std::string& job);

// The identifiers of `checkpoints`, in the order the API listed them.
std::vector<std::string> identifiers(const boost::json::array& checkpoints);

// Whether /readyz answers 200.
bool ready(std::uint16_t port);

}  // namespace ckptd::test
