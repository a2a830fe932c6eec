-- Argo CD health of a one-shot run (Backup / RestoreRequest): Progressing while it runs,
-- Healthy when it Succeeded, Degraded when it Failed or PartiallyFailed.
local hs = {}
local complete, succeeded = nil, nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Complete" then complete = c end
    if c.type == "Succeeded" then succeeded = c end
  end
end
if complete == nil or complete.status ~= "True" then
  hs.status = "Progressing"
  if succeeded ~= nil and succeeded.message ~= nil and succeeded.message ~= "" then
    hs.message = succeeded.message
  else
    hs.message = "Waiting for the Safehold operator"
  end
  return hs
end
if succeeded ~= nil and succeeded.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Degraded"
end
if succeeded ~= nil then
  hs.message = succeeded.reason .. ": " .. (succeeded.message or "")
end
return hs
