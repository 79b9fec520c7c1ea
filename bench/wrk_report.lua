-- wrk reporter for bench/load.py: one JSON line with the summary, errors and a latency percentile ladder (µs)
done = function(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency":{"min":%d,"max":%d,"mean":%.2f,"stdev":%.2f,"percentiles":{',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev)
  local ps = {1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99}
  for i, p in ipairs(ps) do
    out = out .. string.format('"%g":%d,', p, latency:percentile(p))
  end
  out = out .. string.format('"0":%d,"100":%d', latency.min, latency.max)  -- percentile(100) is 0 in wrk 4.1
  io.write("WRK_JSON " .. out .. "}}}\n")
end
