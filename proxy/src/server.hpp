// server.hpp - the HTTP side: a listener and one session per connection
// (Boost.Beast, as in Beast's advanced server example).  A session reads a
// request, converts it to an Exchange (exchange.hpp), hands it to dispatch()
// (routes.hpp) and writes the one reply it gets back.  Threads: the
// io_context's; every session runs on its own strand.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include <boost/asio.hpp>

namespace rsproxy {

class Services;
class Session;

class Server {
public:
    Server(boost::asio::io_context& ioc, Services& sv, int max_connections);

    // Binds and listens; "" on success, else why not.
    std::string listen(const std::string& host, unsigned short port);
    boost::asio::ip::tcp::endpoint local_endpoint() const;
    void start_accept();

    // Shutdown, in order: stop accepting; close connections that are not
    // serving a request; answer the requests still in flight 503 with
    // Connection: close; close everything.
    void stop_accepting();
    void close_idle();
    void abort_inflight();
    void close_all();

    long inflight() const { return inflight_.load(); }
    bool stopping() const { return stopping_.load(); }
    Services& services() { return sv_; }

private:
    friend class Session;
    void do_accept();
    void refuse(boost::asio::ip::tcp::socket sock);
    void add(const std::shared_ptr<Session>& s);
    void remove(const std::shared_ptr<Session>& s);
    template <class F> void each(F f);

    boost::asio::io_context& ioc_;
    Services& sv_;
    int max_connections_;
    boost::asio::ip::tcp::acceptor acceptor_;
    std::atomic<bool> stopping_{false};
    std::atomic<long> inflight_{0};
    std::mutex mu_;
    std::set<std::shared_ptr<Session>> sessions_;
    std::mutex log_mu_;
};

}  // namespace rsproxy
