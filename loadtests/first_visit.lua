-- Every request is a first-time buyer: no mc_did cookie, an address of its own in
-- X-Forwarded-For (the service trusts the load generator as a proxy), a desktop Chrome.
local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
local threads = 0
local run = 0
local counter = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  -- the run id picks the first octet, so rounds never share a device
  run = (tonumber(args[1]) or 0) % 200 + 20
end

function request()
  counter = counter + 1
  local n = counter * 4 + (tid or 0)
  local ip = string.format("%d.%d.%d.%d", run, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", nil, {
    ["User-Agent"] = ua,
    ["Accept-Language"] = "en-US,en;q=0.9",
    ["X-Forwarded-For"] = ip,
  })
end
