-- POST a JSON create with the bench key (BENCH_KEY) to the URL given to wrk.
package.path = os.getenv("BENCH_WRK_DIR") .. "/?.lua;" .. package.path
require("report")

wrk.method = "POST"
wrk.body = '{"model":"sora-2","prompt":"A calm lake at dawn, slow pan","seconds":"4","size":"720x1280"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "none")
