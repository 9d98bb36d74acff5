-- Shared by the wrk scripts: one machine-readable line with exact percentiles (microseconds).
-- BENCH_DELAY_MS paces each connection (a pause after every answer) for the p99 < 50 ms search.
-- The pause is drawn uniformly from 0 to twice the mean: a fixed pause would keep connections
-- that started together in step, so every request would still arrive in a burst.
local pause_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("seed", os.time() * 100 + threads)
end

function init(args)
   math.randomseed(seed)
end

if pause_ms > 0 then
   function delay()
      return math.random(0, 2 * pause_ms)
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status, e.status,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
