-- wrk script: POST distinct SnapInspect webhooks (each thread and request its own inspection id,
-- so none is a duplicate).
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"sType":"Create_Inspection","iInspectionID":%d,"iCompanyID":6847}',
    thread_id * 100000000 + counter)
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end
