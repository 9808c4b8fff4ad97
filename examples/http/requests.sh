curl -s -X POST localhost:3111/todos -H 'content-type: application/json' -d '{"title": "buy milk"}'
# {"id":"1","title":"buy milk","done":false}
curl -s localhost:3111/todos/1
# {"id":"1","title":"buy milk","done":false}
curl -s 'localhost:3111/todos?done=false'
# [{"id":"1","title":"buy milk","done":false}]
curl -s -X POST localhost:3111/todos -d 'not json' -w ' %{http_code}\n'
# {"error":"send JSON with a title"} 400
curl -s -X DELETE localhost:3111/todos/1 -w '%{http_code}\n'
# 204
curl -s localhost:3111/todos/1 -w ' %{http_code}\n'
# {"error":"no todo 1"} 404
curl -s localhost:3111/nowhere -w ' %{http_code}\n'
# {"error":{"code":"NOT_FOUND","message":"no route for GET /nowhere"}} 404
