// Repositories page: add / re-index through the console's endpoints, live state from server-sent events.
(function () {
  "use strict";
  var body = document.getElementById("repos-body");
  var jobsEl = document.getElementById("jobs");
  var form = document.getElementById("add-repo");
  var message = document.getElementById("repo-message");
  var errorEl = document.getElementById("repo-error");
  var announced = {};  // repository -> status last shown
  var byName = {};
  var jobStates = {};  // job id -> state last shown

  function announce(repo) {
    message.textContent = repo.name + (repo.status === "ready" ? " is indexed: " + repo.files + " files." :
      repo.status === "failed" ? " failed to index." : " is " + repo.status + ".");
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function showError(text) { errorEl.textContent = text || ""; errorEl.hidden = !text; }

  function progressCell(repo) {
    var cell = el("td", {"data-label": "Status"});
    cell.appendChild(el("span", {"class": "badge " + repo.status}, repo.status));
    var run = repo.progress;
    if (repo.status === "indexing" && run) {
      var label = run.phase === "cloning" ? "fetching the repository" :
        (run.total ? run.done + " of " + run.total + " files" : "walking the tree");
      var bar = el("progress", {"aria-label": "Indexing " + repo.name, "max": String(run.total || 1)});
      if (run.total) { bar.value = run.done; } else { bar.removeAttribute("value"); }
      cell.appendChild(el("br"));
      cell.appendChild(bar);
      cell.appendChild(el("span", {"class": "muted progress-text"}, " " + label));
    }
    if (repo.status === "failed" && repo.error) { cell.appendChild(el("div", {"class": "error"}, repo.error)); }
    return cell;
  }

  function renderRepos(repos) {
    body.innerHTML = "";
    if (!repos.length) {
      var empty = el("tr");
      empty.appendChild(el("td", {"colspan": "9", "class": "muted"}, "Nothing indexed yet."));
      body.appendChild(empty);
    }
    repos.forEach(function (repo) {
      var tr = el("tr", {"data-repo": repo.name, "data-status": repo.status});
      tr.appendChild(el("th", {"scope": "row"}, repo.name));
      tr.appendChild(progressCell(repo));
      var source = el("td", {"class": "path", "data-label": "Source"}, repo.source + (repo.branch ? " \u00b7 " + repo.branch : ""));
      if (repo.commit) { source.appendChild(document.createTextNode(" \u00b7 ")); source.appendChild(el("code", {}, repo.commit.slice(0, 12))); }
      tr.appendChild(source);
      [["files", "Files"], ["symbols", "Symbols"], ["chunks", "Chunks"]].forEach(function (k) {
        tr.appendChild(el("td", {"class": "num", "data-label": k[1]}, repo[k[0]]));
      });
      var reasons = Object.keys(repo.skipped || {});
      var skipped = el("td", {"data-label": "Skipped"});
      if (!reasons.length) { skipped.textContent = "none"; } else {
        var ul = el("ul", {"class": "skips"});
        reasons.forEach(function (r) { ul.appendChild(el("li", {}, r + ": " + repo.skipped[r])); });
        skipped.appendChild(ul);
      }
      tr.appendChild(skipped);
      tr.appendChild(el("td", {"data-label": "Last indexed"}, repo.indexed_at ? new Date(repo.indexed_at).toLocaleString() : "never"));
      var actions = el("td");
      var button = el("button", {"type": "button", "class": "secondary", "aria-label": "Re-index " + repo.name}, "Re-index");
      button.disabled = repo.status === "indexing";
      button.addEventListener("click", function () { reindex(repo.name); });
      actions.appendChild(button);
      tr.appendChild(actions);
      body.appendChild(tr);
      if (announced[repo.name] === "indexing" && repo.status !== "indexing") { announce(repo); }
      announced[repo.name] = repo.status;
      byName[repo.name] = repo;
    });
  }

  function renderJobs(jobs) {
    jobsEl.innerHTML = "";
    if (!jobs.length) { jobsEl.appendChild(el("li", {"class": "muted"}, "None yet.")); return; }
    jobs.forEach(function (job) {
      // A run too quick to be seen indexing is announced when its request is over.
      if (jobStates[job.id] === "running" && job.state !== "running") {
        if (job.state === "done" && byName[job.target]) { announce(byName[job.target]); }
        else if (job.state === "failed") { showError(job.detail || "indexing failed"); }
      }
      jobStates[job.id] = job.state;
      var text = (job.action === "add" ? "Add " : "Re-index ") + job.target + " \u2014 " + job.state +
        (job.detail ? ": " + job.detail : "");
      jobsEl.appendChild(el("li", {"class": "job job-" + job.state}, text));
    });
  }

  function post(url, payload) {
    showError("");
    return fetch(url, {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(payload || {})}).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || response.status);
          if (response.status === 401 || response.status === 403) { detail += " \u2014 sign in again."; }
          showError(detail);
          return null;
        }
        return data;
      });
    }).catch(function () { showError("The server cannot be reached."); return null; });
  }

  function track(job) {
    if (!job) { return; }
    if (job.state === "running") { jobStates[job.id] = "running"; return; }
    jobStates[job.id] = job.state;
    if (job.state === "done") {
      message.textContent = job.target + " is indexed: " + (job.detail || "done") + ".";
    }
  }

  function reindex(name) {
    message.textContent = "Re-indexing " + name + "\u2026";
    post("/console/repos/" + encodeURIComponent(name) + "/reindex").then(function (result) {
      if (result) { track(result.job); }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var data = new FormData(form);
    var payload = {source: data.get("source"), name: data.get("name") || null, branch: data.get("branch") || null};
    var button = document.getElementById("add-button");
    button.disabled = true;
    message.textContent = "Indexing " + payload.source + "\u2026";
    post("/console/repos", payload).then(function (result) {
      button.disabled = false;
      if (result) { form.reset(); track(result.job); }
      else { message.textContent = ""; }
    });
  });

  var source = new EventSource("/console/repos/stream");
  source.addEventListener("repos", function (event) {
    var data = JSON.parse(event.data);
    renderRepos(data.repos);
    renderJobs(data.jobs);
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) { showError("Live updates stopped: reload the page (or sign in again)."); }
  };
})();
