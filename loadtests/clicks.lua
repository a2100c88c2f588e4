-- Every request is a distinct device (its own mc_did cookie), with real browser User-Agents.
local uas = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
}
local threads = 0
local run = "r"
local counter = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  run = args[1] or "r"
end

function request()
  counter = counter + 1
  -- A device id has 22 characters: the run id is cut to 8, never the counter, so ids stay distinct.
  local device = string.format("%s%02d%012d", string.sub(run .. "xxxxxxxx", 1, 8), tid or 0, counter)
  return wrk.format("GET", nil, {
    ["User-Agent"] = uas[counter % #uas + 1],
    ["Accept-Language"] = "en-US,en;q=0.9",
    ["Cookie"] = "mc_did=" .. device,
  })
end
