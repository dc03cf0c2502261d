#include "support/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <poll.h>

#include <algorithm>
#include <cctype>

namespace ckptd::test {

namespace net = boost::asio;
namespace http = boost::beast::http;

struct http_connection::impl {
  net::io_context ctx;
  net::ip::tcp::socket socket{ctx};
  boost::beast::flat_buffer buffer;

  http_response read_response(bool head) {
    http::response_parser<http::string_body> parser;
    parser.skip(head);
    parser.body_limit(64 * 1024 * 1024);
    http::read(socket, buffer, parser);
    auto& res = parser.get();
    http_response out;
    out.status = static_cast<int>(res.result_int());
    for (auto& field : res) {
      std::string name(field.name_string());
      std::transform(name.begin(), name.end(), name.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      out.headers[name] = std::string(field.value());
    }
    out.body = std::move(res.body());
    return out;
  }
};

http_connection::http_connection(std::uint16_t port) : impl_(std::make_unique<impl>()) {
  impl_->socket.connect({net::ip::make_address("127.0.0.1"), port});
}

http_connection::~http_connection() = default;

http_response http_connection::request(const std::string& method, const std::string& target,
                                       const header_list& headers, const std::string& body) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1");
  for (auto& [name, value] : headers) req.set(name, value);
  if (!body.empty() || method == "POST") {
    req.body() = body;
    req.prepare_payload();
  }
  http::write(impl_->socket, req);
  return impl_->read_response(method == "HEAD");
}

http_response http_connection::raw(const std::string& bytes) {
  net::write(impl_->socket, net::buffer(bytes));
  return impl_->read_response(false);
}

http_response get(std::uint16_t port, const std::string& target, const header_list& headers) {
  return request(port, "GET", target, headers);
}

http_response request(std::uint16_t port, const std::string& method, const std::string& target,
                      const header_list& headers, const std::string& body) {
  http_connection c(port);
  return c.request(method, target, headers, body);
}

std::string read_stream(std::uint16_t port, const std::string& target,
                        const std::function<bool(const std::string& received)>& done,
                        std::chrono::milliseconds timeout) {
  net::io_context ctx;
  net::ip::tcp::socket socket(ctx);
  socket.connect({net::ip::make_address("127.0.0.1"), port});
  net::write(socket, net::buffer("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  std::string received;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done(received) && std::chrono::steady_clock::now() < deadline) {
    pollfd p{socket.native_handle(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buffer[4096];
    boost::system::error_code ec;
    const std::size_t n = socket.read_some(net::buffer(buffer), ec);
    if (ec) break;
    received.append(buffer, n);
  }
  return received;
}

}  // namespace ckptd::test
