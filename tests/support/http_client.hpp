#pragma once
// A minimal blocking HTTP/1.1 client for black-box tests, over 127.0.0.1.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ckptd::test {

struct http_response {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
};

using header_list = std::vector<std::pair<std::string, std::string>>;

// One keep-alive connection; requests go out one after another on it.
class http_connection {
 public:
  explicit http_connection(std::uint16_t port);
  ~http_connection();
  http_connection(const http_connection&) = delete;
  http_connection& operator=(const http_connection&) = delete;

  // Sends a request and reads its response. Throws on connection errors.
  http_response request(const std::string& method, const std::string& target,
                        const header_list& headers = {}, const std::string& body = {});
  // Sends raw bytes (for malformed requests) and reads one response.
  http_response raw(const std::string& bytes);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// A GET on a fresh connection. Throws on connection errors.
http_response get(std::uint16_t port, const std::string& target, const header_list& headers = {});
// Any method on a fresh connection.
http_response request(std::uint16_t port, const std::string& method, const std::string& target,
                      const header_list& headers = {}, const std::string& body = {});
// A GET on a fresh connection for a response that does not end on its own
// (an event stream): the bytes that arrive, head included, until
// `done(received)` holds, the server closes or `timeout` passes.
std::string read_stream(std::uint16_t port, const std::string& target,
                        const std::function<bool(const std::string& received)>& done,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace ckptd::test
