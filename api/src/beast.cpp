// The one translation unit that compiles Beast's implementation (see CMakeLists.txt).
#include <boost/beast/src.hpp>
