#include "common/observability/otlp_exporter.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/exchange.hpp"
#include "common/net/http_client.hpp"
#include "common/observability/log.hpp"
#include "common/version.hpp"
#include "postern/config/v1/config.pb.h"

namespace postern::tracing {
namespace {

void string_member(std::string& out, std::string_view key, std::string_view value) {
  out += '"';
  out += key;
  out += "\":\"";
  log::json_escape(out, value);
  out += '"';
}

void attribute(std::string& out, const Attribute& a) {
  out += "{\"key\":\"";
  log::json_escape(out, a.key);
  out += "\",\"value\":{";
  if (a.is_number) {
    out += "\"intValue\":\"" + std::to_string(a.number) + "\"";
  } else {
    string_member(out, "stringValue", a.text);
  }
  out += "}}";
}

void span_json(std::string& out, const SpanData& s) {
  out += '{';
  string_member(out, "traceId", to_hex(s.trace_id));
  out += ',';
  string_member(out, "spanId", to_hex(s.span_id));
  if (s.parent_id != SpanId{}) {
    out += ',';
    string_member(out, "parentSpanId", to_hex(s.parent_id));
  }
  if (!s.tracestate.empty()) {
    out += ',';
    string_member(out, "traceState", s.tracestate);
  }
  out += ',';
  string_member(out, "name", s.name);
  out += ",\"kind\":" + std::to_string(static_cast<int>(s.kind));
  out += ",\"startTimeUnixNano\":\"" + std::to_string(s.start_unix_ns) + "\"";
  out += ",\"endTimeUnixNano\":\"" + std::to_string(s.end_unix_ns) + "\"";
  out += ",\"attributes\":[";
  for (std::size_t i = 0; i < s.attributes.size(); ++i) {
    if (i) out += ',';
    attribute(out, s.attributes[i]);
  }
  out += "],\"status\":{";
  if (s.error) {
    out += "\"code\":2,";
    string_member(out, "message", s.status_message);
  } else {
    out += "\"code\":0";
  }
  out += "}}";
}

// The request body, all at once.
class StringBody final : public BodySource {
 public:
  explicit StringBody(const std::string& body) : body_(body) {}
  asio::awaitable<bool> next(std::string_view& chunk) override {
    if (done_) co_return false;
    done_ = true;
    chunk = body_;
    co_return true;
  }

 private:
  const std::string& body_;
  bool done_ = false;
};

// The collector's answer: its status; the body (a partial-success note at
// most) is not kept.
class StatusSink final : public ResponseSink {
 public:
  asio::awaitable<void> head(tunnel::v1::ResponseHead& head) override {
    started_ = true;
    status = head.status();
    co_return;
  }
  asio::awaitable<void> body(std::string_view) override { co_return; }
  asio::awaitable<void> end(const Trailers&) override { co_return; }
  unsigned status = 0;
};

std::chrono::milliseconds millis(const google::protobuf::Duration& d, std::chrono::milliseconds fallback) {
  const auto ms = std::chrono::milliseconds(d.seconds() * 1000 + d.nanos() / 1000000);
  return ms.count() > 0 ? ms : fallback;
}

}  // namespace

std::string encode_otlp_json(const Resource& resource, const std::vector<std::unique_ptr<SpanData>>& spans) {
  std::string out = "{\"resourceSpans\":[{\"resource\":{\"attributes\":[";
  const Attribute attrs[] = {{"service.name", resource.service_name, 0, false},
                             {"service.instance.id", resource.instance_id, 0, false},
                             {"service.version", resource.version, 0, false}};
  bool first = true;
  for (const auto& a : attrs) {
    if (a.text.empty()) continue;
    if (!first) out += ',';
    first = false;
    attribute(out, a);
  }
  out += "]},\"scopeSpans\":[{\"scope\":{\"name\":\"postern\"},\"spans\":[";
  for (std::size_t i = 0; i < spans.size(); ++i) {
    if (i) out += ',';
    span_json(out, *spans[i]);
  }
  out += "]}]}]}";
  return out;
}

struct OtlpExporter::Impl {
  Impl(ExporterOptions o, Resource r, prometheus::Registry& registry)
      : options(std::move(o)), resource(std::move(r)), origin(net::Origin::parse(options.endpoint, options.ca_file)) {
    target = origin.base_path.empty() ? "/v1/traces" : origin.base_path;
    origin.base_path.clear();
    origin.connect_timeout = options.timeout;
    origin.read_timeout = options.timeout;
    origin.max_idle = 1;
    origin.peer = "trace collector";
    exported = &prometheus::BuildCounter()
                    .Name("postern_trace_spans_exported_total")
                    .Help("Spans the collector accepted")
                    .Register(registry)
                    .Add({});
    auto& dropped = prometheus::BuildCounter()
                        .Name("postern_trace_spans_dropped_total")
                        .Help("Spans not exported, by reason: queue_full (the collector is behind or away), "
                              "export_failed (it refused or did not answer in time)")
                        .Register(registry);
    dropped_full = &dropped.Add({{"reason", "queue_full"}});
    dropped_failed = &dropped.Add({{"reason", "export_failed"}});
  }

  asio::awaitable<void> run() {
    net::HttpClient http(ioc.get_executor());
    for (;;) {
      timer.expires_after(options.flush_interval);
      co_await timer.async_wait(use_nothrow);
      bool stop = false;
      for (;;) {
        std::vector<std::unique_ptr<SpanData>> batch;
        {
          std::lock_guard lock(mutex);
          kicked = false;
          stop = stopping;
          const std::size_t n = std::min(queue.size(), options.max_batch);
          for (std::size_t i = 0; i < n; ++i) batch.push_back(std::move(queue[i]));
          queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(n));
        }
        if (batch.empty()) break;
        co_await send(http, batch);
      }
      if (stop) break;
    }
    std::lock_guard lock(mutex);
    finished = true;
    done.notify_all();
  }

  asio::awaitable<void> send(net::HttpClient& http, const std::vector<std::unique_ptr<SpanData>>& batch) {
    const std::string body = encode_otlp_json(resource, batch);
    tunnel::v1::RequestHead head;
    head.set_method("POST");
    head.set_target(target);
    head.set_http_version(11);
    head.set_content_length(static_cast<std::int64_t>(body.size()));
    auto* type = head.add_headers();
    type->set_name("Content-Type");
    type->set_value("application/json");
    StringBody source(body);
    StatusSink sink;
    std::string error;
    try {
      co_await http.exchange(origin, head, source, sink, options.timeout);
      if (sink.status < 200 || sink.status > 299) error = "the collector answered " + std::to_string(sink.status);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (error.empty()) {
      exported->Increment(static_cast<double>(batch.size()));
      if (failing) POSTERN_LOG(info, "span export recovered").kv("endpoint", options.endpoint);
      failing = false;
      co_return;
    }
    dropped_failed->Increment(static_cast<double>(batch.size()));
    // Once per outage, not once per batch.
    if (!failing) {
      POSTERN_LOG(warn, "span export failed")
          .kv("endpoint", options.endpoint)
          .kv("error", error)
          .kv("dropped", static_cast<std::uint64_t>(batch.size()));
    }
    failing = true;
  }

  ExporterOptions options;
  Resource resource;
  net::Origin origin;
  std::string target;
  prometheus::Counter* exported = nullptr;
  prometheus::Counter* dropped_full = nullptr;
  prometheus::Counter* dropped_failed = nullptr;
  bool failing = false;  // export thread only

  std::mutex mutex;
  std::condition_variable done;
  std::vector<std::unique_ptr<SpanData>> queue;
  bool kicked = false, stopping = false, finished = false;

  asio::io_context ioc{1};
  asio::steady_timer timer{ioc};
  std::thread thread;
};

OtlpExporter::OtlpExporter(ExporterOptions options, Resource resource, prometheus::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(resource), registry)) {
  asio::co_spawn(impl_->ioc, impl_->run(), asio::detached);
  impl_->thread = std::thread([this] { impl_->ioc.run(); });
}

OtlpExporter::~OtlpExporter() { stop(std::chrono::milliseconds(0)); }

void OtlpExporter::submit(std::unique_ptr<SpanData> span) {
  std::lock_guard lock(impl_->mutex);
  if (impl_->stopping || impl_->queue.size() >= impl_->options.max_queued) {
    impl_->dropped_full->Increment();
    return;
  }
  impl_->queue.push_back(std::move(span));
  if (impl_->queue.size() >= impl_->options.max_batch && !impl_->kicked) {
    impl_->kicked = true;
    asio::post(impl_->ioc, [impl = impl_.get()] { impl->timer.cancel(); });
  }
}

void OtlpExporter::stop(std::chrono::milliseconds deadline) {
  remove_sink(this);
  if (!impl_->thread.joinable()) return;
  std::unique_lock lock(impl_->mutex);
  impl_->stopping = true;
  asio::post(impl_->ioc, [impl = impl_.get()] { impl->timer.cancel(); });
  impl_->done.wait_for(lock, deadline, [&] { return impl_->finished; });
  lock.unlock();
  impl_->ioc.stop();
  impl_->thread.join();
}

std::unique_ptr<OtlpExporter> start_tracing(const config::v1::TracingConfig& config, std::string_view service,
                                            std::string_view instance_id, prometheus::Registry& registry) {
  set_sample_ratio(config.has_sample_ratio() ? config.sample_ratio() : 1.0);
  if (config.endpoint().empty()) return nullptr;
  ExporterOptions o;
  o.endpoint = config.endpoint();
  o.ca_file = config.ca_file();
  if (config.max_queued_spans() > 0) o.max_queued = config.max_queued_spans();
  if (config.max_batch_spans() > 0) o.max_batch = config.max_batch_spans();
  o.flush_interval = millis(config.flush_interval(), o.flush_interval);
  o.timeout = millis(config.timeout(), o.timeout);
  Resource r;
  r.service_name = config.service_name().empty() ? "postern-" + std::string(service) : config.service_name();
  r.instance_id = std::string(instance_id);
  r.version = std::string(version());
  auto exporter = std::make_unique<OtlpExporter>(std::move(o), std::move(r), registry);
  set_sink(exporter.get());
  return exporter;
}

}  // namespace postern::tracing
