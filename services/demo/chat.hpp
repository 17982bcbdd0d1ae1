#pragma once
// The demo's WebSocket service: the echo broadcaster of the webMethods
// WebSocket tutorial, plus what the integration tests need.
//
//   ws://demo/ANY/PATH?user=NAME
//     - every text message is broadcast to every client on the same path as
//       "Message Received from {user}: {message}";
//     - every binary message goes back to all clients on the path unchanged;
//     - when the path contains "broadcast", every client on it also gets
//       "Server time: <UTC ISO-8601>" each second;
//     - the text message "/close CODE [REASON]" closes the sender's session
//       with that code and reason;
//     - the text message "/flood COUNT SIZE" sends the sender COUNT binary
//       messages of SIZE bytes, as fast as its connection takes them (a
//       service that outruns a slow client);
//     - subprotocols: of those the client offers, the demo picks "chat.v2"
//       before "chat.v1", whatever the client's order;
//     - an upgrade to /refuse/N is refused with HTTP status N.
//
// Sessions run on their connection's strand; the hub is shared and locked.

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace postern::demo {

/// Takes `stream` over (it is moved from) for a WebSocket session on the
/// upgrade request `req`, and runs the session to its end.
boost::asio::awaitable<void> run_chat(boost::beast::tcp_stream& stream,
                                      const boost::beast::http::request<boost::beast::http::buffer_body>& req);
boost::asio::awaitable<void> run_chat(boost::beast::ssl_stream<boost::beast::tcp_stream>& stream,
                                      const boost::beast::http::request<boost::beast::http::buffer_body>& req);

}  // namespace postern::demo
