// The chat playground: sends through the console's endpoint (a signed webhook on the server) and
// listens to server-sent events for the conversation of the number it acts as.
(function () {
  "use strict";
  var list = document.getElementById("messages");
  var typingEl = document.getElementById("typing");
  var errorEl = document.getElementById("chat-error");
  var composer = document.getElementById("composer");
  var text = document.getElementById("text");
  var select = document.getElementById("number");
  var custom = document.getElementById("custom-number");
  var userForm = document.getElementById("user-form");
  var source = null;
  var serverTyping = false;
  var awaiting = {};  // MessageSid -> true until its bubble comes back from the server
  var readTimer = null;
  var STORE = "repotalk.console.number";
  // A clock drawn in SVG: emoji fonts are not on every machine.
  var CLOCK = '<svg viewBox="0 0 16 16" width="11" height="11" aria-hidden="true" focusable="false">' +
    '<circle cx="8" cy="8" r="6.5" fill="none" stroke="currentColor" stroke-width="1.5"/>' +
    '<path d="M8 4.5V8l2.5 1.5" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>';
  var TICKS = {
    pending: [CLOCK, "Sending"], sent: ["\u2713", "Sent"], delivered: ["\u2713\u2713", "Delivered"],
    read: ["\u2713\u2713", "Read"], failed: ["!", "Not delivered"]
  };

  function currentNumber() { return select.value; }

  function ensureOption(number) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === number) { return; }
    }
    var option = document.createElement("option");
    option.value = number;
    option.textContent = number;
    select.appendChild(option);
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = !message;
  }

  function timeOf(iso) {
    var date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  function ticksHtml(bubble) {
    var tick = TICKS[bubble.status] || TICKS.sent;
    return '<span class="ticks tick-' + bubble.status + '" role="img" aria-label="' + tick[1] + '">' + tick[0] + "</span>";
  }

  // A bubble's text never changes; only its status does. Existing bubbles get their ticks updated in
  // place, so the live region announces new messages and nothing else.
  function upsert(bubble) {
    var mine = bubble.direction === "in";
    if (mine) { delete awaiting[bubble.correlation_id]; }
    var li = document.getElementById(bubble.id);
    if (li) {
      if (li.dataset.status !== bubble.status) {
        li.dataset.status = bubble.status;
        li.className = "bubble " + (mine ? "from-me" : "from-bot") + " status-" + bubble.status;
        var ticks = li.querySelector(".ticks");
        if (ticks) { ticks.outerHTML = ticksHtml(bubble); }
      }
      return;
    }
    li = document.createElement("li");
    li.id = bubble.id;
    li.className = "bubble " + (mine ? "from-me" : "from-bot") + " status-" + bubble.status;
    li.dataset.status = bubble.status;
    li.dataset.correlation = bubble.correlation_id;
    // bubble.html is rendered and escaped on the server (WhatsApp formatting -> HTML).
    li.innerHTML = '<span class="visually-hidden">' + (mine ? "You: " : "repotalk: ") + "</span>" +
      '<div class="body">' + bubble.html + "</div>" +
      '<span class="meta"><time datetime="' + bubble.at + '">' + timeOf(bubble.at) + "</time>" +
      (mine ? " " + ticksHtml(bubble) : "") + "</span>";
    var pending = document.getElementById("pending:" + bubble.correlation_id);
    if (mine && pending) { list.replaceChild(li, pending); } else { list.appendChild(li); }
  }

  function scrollToEnd() { list.scrollTop = list.scrollHeight; }

  function updateTyping() {
    var on = serverTyping || Object.keys(awaiting).length > 0;
    typingEl.classList.toggle("active", on);
    typingEl.textContent = on ? "repotalk is typing" : "";
  }

  function scheduleRead() {
    if (readTimer || document.visibilityState !== "visible") { return; }
    if (!list.querySelector(".from-bot.status-delivered")) { return; }
    readTimer = setTimeout(function () {
      readTimer = null;
      fetch("/console/chat/read", {method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({number: currentNumber()}), credentials: "same-origin"}).catch(function () {});
    }, 400);
  }

  function connect() {
    if (source) { source.close(); }
    list.innerHTML = "";
    awaiting = {};
    serverTyping = false;
    updateTyping();
    source = new EventSource("/console/chat/stream?number=" + encodeURIComponent(currentNumber()));
    source.addEventListener("snapshot", function (event) {
      var data = JSON.parse(event.data);
      // The first snapshot, or one after a reconnection: keep what is shown, drop what is gone (/delete).
      var ids = {};
      data.bubbles.forEach(function (bubble) { ids[bubble.id] = true; });
      Array.prototype.slice.call(list.querySelectorAll("li:not(.pending)")).forEach(function (li) {
        if (!ids[li.id]) { li.remove(); }
      });
      data.bubbles.forEach(upsert);
      serverTyping = data.typing;
      updateTyping();
      scrollToEnd();
      scheduleRead();
      list.setAttribute("aria-busy", "false");
    });
    source.addEventListener("bubble", function (event) {
      upsert(JSON.parse(event.data));
      updateTyping();
      scrollToEnd();
      scheduleRead();
    });
    source.addEventListener("typing", function (event) {
      serverTyping = JSON.parse(event.data).typing;
      updateTyping();
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        showError("The connection to the server was lost. Reload the page to reconnect.");
      }
    };
    source.onopen = function () { showError(""); };
  }

  function switchTo(number) {
    ensureOption(number);
    select.value = number;
    try { localStorage.setItem(STORE, number); } catch (e) { /* storage may be off */ }
    var url = new URL(window.location.href);
    url.searchParams.set("as", number);
    history.replaceState(null, "", url);
    connect();
  }

  userForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var wanted = custom.value.trim();
    if (wanted && !custom.checkValidity()) { showError("A number is + and the country code, e.g. +15550003333."); return; }
    showError("");
    custom.value = "";
    switchTo(wanted || select.value);
  });
  select.addEventListener("change", function () { switchTo(select.value); });

  composer.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = text.value;
    if (!body.trim()) { return; }
    showError("");
    var placeholder = document.createElement("li");
    placeholder.className = "bubble from-me pending status-pending";
    placeholder.innerHTML = '<span class="visually-hidden">You: </span><div class="body"></div>' +
      '<span class="meta"><span class="ticks" role="img" aria-label="Sending">' + CLOCK + "</span></span>";
    placeholder.querySelector(".body").textContent = body;
    list.appendChild(placeholder);
    scrollToEnd();
    text.value = "";
    fetch("/console/chat/messages", {
      method: "POST", headers: {"Content-Type": "application/json"}, credentials: "same-origin",
      body: JSON.stringify({number: currentNumber(), body: body})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          placeholder.remove();
          text.value = body;
          var detail = typeof data.detail === "string" ? data.detail : "the message could not be sent";
          showError("Not sent (" + response.status + "): " + detail);
          return;
        }
        if (!document.getElementById("in:" + data.message_sid)) {
          placeholder.id = "pending:" + data.message_sid;
          awaiting[data.message_sid] = true;
        } else {
          placeholder.remove();
        }
        updateTyping();
      });
    }).catch(function () {
      placeholder.remove();
      text.value = body;
      showError("Not sent: the server cannot be reached.");
    });
  });

  text.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  document.addEventListener("visibilitychange", scheduleRead);

  var initial = new URL(window.location.href).searchParams.get("as");
  if (!initial) { try { initial = localStorage.getItem(STORE); } catch (e) { initial = null; } }
  switchTo(initial && /^\+[1-9][0-9]{6,14}$/.test(initial) ? initial : select.value);
})();
