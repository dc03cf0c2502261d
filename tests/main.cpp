// The unit test module: every *_tests.cpp in this folder is one suite.
#define BOOST_TEST_MODULE ckptd_unit_tests
#include <boost/test/unit_test.hpp>
