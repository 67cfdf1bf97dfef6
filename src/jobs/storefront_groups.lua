-- The message groups of a storefront command (docs/storefront.md, "Order of commands"):
-- commands about one order, one merchant's SKU, one return or one complaint take effect in
-- the order sent. Keys come from the payload alone; a payload that is not a command gets no
-- keys and runs at once (to be refused).
local function group_keys(payload)
  local c = cjson.decode(payload)
  if type(c) ~= 'table' then return {} end
  local function s(v) return type(v) == 'string' end
  local t = c['type']
  if t == 'order.placed' then
    if type(c.order) == 'table' and s(c.order.id) then return {'o:' .. c.order.id} end
  elseif t == 'inventory.set' or t == 'inventory.adjust' then
    if s(c.merchant_id) and s(c.sku) then
      return {'s:' .. #c.merchant_id .. ':' .. c.merchant_id .. c.sku}
    end
  elseif t == 'merchant.decision' or t == 'shipment.created' or t == 'order.cancel' then
    if s(c.storefront_order_id) then return {'o:' .. c.storefront_order_id} end
  elseif t == 'return.requested' then
    local k = {}
    if s(c.storefront_order_id) then k[#k + 1] = 'o:' .. c.storefront_order_id end
    if s(c.return_id) then k[#k + 1] = 'r:' .. c.return_id end
    return k
  elseif t == 'return.decision' or t == 'return.shipped' or t == 'return.received' then
    if s(c.return_id) then return {'r:' .. c.return_id} end
  elseif t == 'complaint.opened' then
    local k = {}
    if s(c.storefront_order_id) then k[#k + 1] = 'o:' .. c.storefront_order_id end
    if s(c.complaint_id) then k[#k + 1] = 'c:' .. c.complaint_id end
    return k
  elseif t == 'complaint.message' or t == 'complaint.closed' then
    if s(c.complaint_id) then return {'c:' .. c.complaint_id} end
  end
  return {}
end
