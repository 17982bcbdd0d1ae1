#pragma once
// demo.html: the WebSocket client page of the webMethods tutorial, served by
// the demo at /demo.html (through the edge: /gateway/demo/1.0/demo.html).
// It connects to the echo broadcaster through the edge and shows messages.
//
// Query parameters: ws=URL (default: this host's /gateway/chat/1.0/broadcast,
// ws or wss as the page), user=NAME, key=API-KEY (sent as x-Gateway-APIKey),
// auto=1 (connect on load), send=TEXT (send once connected).

#include <string_view>

namespace postern::demo {

inline constexpr std::string_view kDemoPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Postern WebSocket demo</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; max-width: 60em; }
  input[type=text] { width: 100%; box-sizing: border-box; padding: .3em; }
  label { display: block; margin-top: .6em; }
  #log { list-style: none; padding: 0; border: 1px solid #ccc; height: 20em; overflow-y: auto; }
  #log li { padding: .15em .5em; border-bottom: 1px solid #eee; font-family: monospace; }
  #log li.sys { color: #666; }
  #status { font-weight: bold; }
</style>
</head>
<body>
<h1>Postern WebSocket demo</h1>
<p>The echo broadcaster, reached through the edge: every message is sent to every client on the same path;
   a path containing <code>broadcast</code> also gets the server time each second.</p>
<label>WebSocket URI <input type="text" id="uri"></label>
<label>User <input type="text" id="user" value="browser"></label>
<label>API key (optional) <input type="text" id="key"></label>
<p><button id="connect">Connect</button> <button id="disconnect" disabled>Disconnect</button>
   Status: <span id="status">disconnected</span></p>
<label>Message <input type="text" id="message" value="Hello"></label>
<p><button id="send" disabled>Send</button></p>
<ul id="log"></ul>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const scheme = location.protocol === "https:" ? "wss" : "ws";
$("uri").value = params.get("ws") || `${scheme}://${location.host}/gateway/chat/1.0/broadcast`;
if (params.get("user")) $("user").value = params.get("user");
if (params.get("key")) $("key").value = params.get("key");
let ws = null;
function log(text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  $("log").appendChild(li);
  $("log").scrollTop = $("log").scrollHeight;
}
function setState(state) {
  $("status").textContent = state;
  const open = state === "connected";
  $("connect").disabled = open || state === "connecting";
  $("disconnect").disabled = !open;
  $("send").disabled = !open;
}
function connect() {
  const url = new URL($("uri").value);
  url.searchParams.set("user", $("user").value);
  if ($("key").value) url.searchParams.set("x-Gateway-APIKey", $("key").value);
  setState("connecting");
  ws = new WebSocket(url.toString());
  ws.onopen = () => {
    setState("connected");
    log("connected to " + url.pathname, "sys");
    const first = params.get("send");
    if (first) ws.send(first);
  };
  ws.onmessage = (e) => log(typeof e.data === "string" ? e.data : "[binary message]");
  ws.onclose = (e) => { setState("disconnected"); log(`closed: ${e.code} ${e.reason}`, "sys"); };
  ws.onerror = () => log("error", "sys");
}
$("connect").onclick = connect;
$("disconnect").onclick = () => ws && ws.close(1000, "bye");
$("send").onclick = () => ws && ws.send($("message").value);
if (params.get("auto") === "1") connect();
</script>
</body>
</html>
)HTML";

}  // namespace postern::demo
