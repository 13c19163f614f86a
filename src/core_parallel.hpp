// core_parallel.hpp - the core's ways of using a second thread.
//
// A worker thread starts with every signal blocked, so a host process's
// signal handlers (PostgreSQL's) only ever run on the calling thread; it never
// calls the CancelCheck, and its exceptions are handed back to the caller.
// PostgreSQL-free.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#endif

#include "core_topk.hpp"

namespace recsys {
namespace detail {

// Starts `fn` on a new thread with every signal blocked (the thread inherits
// the mask, which is restored here).
template <class F>
std::thread start_thread_without_signals(F&& fn) {
#if defined(__unix__) || defined(__APPLE__)
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
        std::thread t(std::forward<F>(fn));
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        return t;
    } catch (...) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        throw;
    }
#else
    return std::thread(std::forward<F>(fn));
#endif
}

// Calls body(begin, end, worker) over [0, n) in blocks of `block` indices
// handed out from a shared counter: worker 0 is the calling thread, worker 1
// (only with two_threads, and when a thread can be started) a second one.
// Between blocks the calling thread polls `cancel` (throws Cancelled, after
// stopping the worker) and calls between_blocks(done) if set.  A block is
// computed by the same code whichever thread takes it, so results written per
// index do not depend on the thread count.
template <class Body, class Between>
void parallel_blocks(std::size_t n, std::size_t block, bool two_threads, Body&& body,
                     const CancelCheck& cancel, Between&& between_blocks) {
    std::atomic<std::size_t> next{0};
    std::atomic<bool> stop{false}, done{false};
    std::exception_ptr worker_error;
    struct Joiner {
        std::thread t;
        std::atomic<bool>* stop;
        ~Joiner() {
            if (t.joinable()) {
                stop->store(true);
                t.join();
            }
        }
    } joiner{std::thread(), &stop};

    if (two_threads && n > block) {
        try {
            joiner.t = start_thread_without_signals([&] {
                try {
                    for (;;) {
                        if (stop.load(std::memory_order_relaxed)) break;
                        const std::size_t b = next.fetch_add(block);
                        if (b >= n) break;
                        body(b, std::min(n, b + block), 1);
                    }
                } catch (...) {
                    worker_error = std::current_exception();
                    stop.store(true);
                }
                done.store(true);
            });
        } catch (const std::system_error&) {
            // No thread available: this thread takes every block.
        }
    }
    for (;;) {
        if (stop.load()) break;  // the worker failed
        poll_cancel(cancel);     // throws; ~Joiner stops and joins the worker
        const std::size_t b = next.fetch_add(block);
        if (b >= n) break;
        between_blocks(b);
        body(b, std::min(n, b + block), 0);
    }
    if (joiner.t.joinable()) {
        while (!done.load()) {
            poll_cancel(cancel);
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        joiner.t.join();
    }
    if (worker_error) std::rethrow_exception(worker_error);
}

// One job at a time on a second thread, while the calling thread goes on
// with other work: post() hands a job over, wait() blocks until it is done
// and rethrows what it threw.  The thread starts (without signals) at the
// first post() and lives until the destructor, which waits for the job in
// flight and joins it; a job is never interrupted, so a caller that must
// stop soon hands over small jobs.  Not thread-safe itself: one caller.
class AsyncWorker {
public:
    AsyncWorker() = default;
    AsyncWorker(const AsyncWorker&) = delete;
    AsyncWorker& operator=(const AsyncWorker&) = delete;
    ~AsyncWorker() {
        if (!thread_.joinable()) return;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            done_cv_.wait(lock, [this] { return !busy_; });
            quit_ = true;
        }
        job_cv_.notify_one();
        thread_.join();
    }

    // Hands `job` to the thread (the previous one must have been waited
    // for).  Throws std::system_error when no thread can be started; the
    // job has not run then.
    void post(std::function<void()> job) {
        if (!thread_.joinable())
            thread_ = start_thread_without_signals([this] { loop(); });
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = std::move(job);
            error_ = nullptr;
            busy_ = true;
        }
        job_cv_.notify_one();
    }

    // Blocks until the job posted last is done; rethrows its exception.
    void wait() {
        std::exception_ptr e;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            done_cv_.wait(lock, [this] { return !busy_; });
            e = error_;
            error_ = nullptr;
        }
        if (e) std::rethrow_exception(e);
    }

    bool busy() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return busy_;
    }

private:
    void loop() {
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            job_cv_.wait(lock, [this] { return busy_ || quit_; });
            if (!busy_) return;  // quit_
            std::function<void()> job = std::move(job_);
            lock.unlock();
            std::exception_ptr e;
            try {
                job();
            } catch (...) {
                e = std::current_exception();
            }
            job = nullptr;
            lock.lock();
            error_ = e;
            busy_ = false;
            done_cv_.notify_one();
        }
    }

    mutable std::mutex mutex_;
    std::condition_variable job_cv_, done_cv_;
    std::function<void()> job_;
    std::exception_ptr error_;
    bool busy_ = false, quit_ = false;
    std::thread thread_;
};

}  // namespace detail
}  // namespace recsys
