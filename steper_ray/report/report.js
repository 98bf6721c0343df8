// The run report's trace browser: filters over the questions in #trace-data and their steps,
// drawn on demand. Every string from the data goes through textContent, never innerHTML.
(function () {
  "use strict";
  var blob = document.getElementById("trace-data");
  var list = document.getElementById("questions");
  if (!blob || !list) { return; }
  var data = JSON.parse(blob.textContent);
  var PAGE = 200;
  var $ = function (id) { return document.getElementById(id); };
  var filters = { source: $("f-source"), dataset: $("f-dataset"), kept: $("f-kept"),
                  correct: $("f-correct"), search: $("f-search") };
  var count = $("count");
  var more = $("more");
  var matching = [];
  var shown = 0;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function option(select, value, label) {
    var o = el("option", null, label);
    o.value = value;
    select.appendChild(o);
  }

  data.sources.forEach(function (s, i) {
    option(filters.source, String(i), s.label + " (" + s.shown + ")");
  });
  var datasets = [];
  data.questions.forEach(function (q) {
    if (datasets.indexOf(q.ds) < 0) { datasets.push(q.ds); }
  });
  datasets.forEach(function (d) { option(filters.dataset, d, d); });

  function matches(q) {
    var f = filters;
    if (f.source.value !== "" && String(q.src) !== f.source.value) { return false; }
    if (f.dataset.value !== "" && q.ds !== f.dataset.value) { return false; }
    if (f.kept.value === "kept" && q.kept !== true) { return false; }
    if (f.kept.value === "dropped" && q.kept !== false) { return false; }
    if (f.correct.value === "correct" && q.correct !== true) { return false; }
    if (f.correct.value === "wrong" && q.correct !== false) { return false; }
    var text = f.search.value.trim().toLowerCase();
    if (text) {
      var hay = [q.q, q.id, q.answer || "", (q.gold || []).join(" ")].join(" ").toLowerCase();
      if (hay.indexOf(text) < 0) { return false; }
    }
    return true;
  }

  function passageItem(pid, gold) {
    var li = el("li", gold ? "gold" : null);
    var body = el("div", "pbody");
    if (gold) { body.appendChild(el("span", "gold-tag", "gold")); }
    var p = data.passages[pid];
    if (p) {
      body.appendChild(el("span", "ptitle", p[0]));
      body.appendChild(document.createTextNode(" "));
      body.appendChild(el("span", "ptext", p[1]));
    } else {
      body.appendChild(el("span", "ptitle", pid));
      body.appendChild(el("span", "ptext", " (passage text not in the index)"));
    }
    li.appendChild(body);
    li.title = pid + " (click for the whole passage)";
    li.addEventListener("click", function () { li.classList.toggle("full"); });
    return li;
  }

  function stepsOf(q) {
    var box = el("div", "steps");
    var gold = q.gold_ids || [];
    var seen = {};
    q.steps.forEach(function (s) {
      var div = el("div", "step " + (s.task || ""));
      div.appendChild(el("div", "step-head", "step " + s.n + " · " + s.task + " · " + s.tokens + " tokens" +
                                            (s.notes && s.notes.length ? " · " + s.notes.join(", ") : "")));
      var query = el("div", null, "query: ");
      query.appendChild(el("span", "query", s.query));
      div.appendChild(query);
      var ol = el("ol", "passages");
      s.ids.forEach(function (pid) {
        seen[pid] = true;
        ol.appendChild(passageItem(pid, gold.indexOf(pid) >= 0));
      });
      div.appendChild(ol);
      var sentence = el("div", "sentence", "wrote: ");
      sentence.appendChild(el("b", null, s.out));
      div.appendChild(sentence);
      box.appendChild(div);
    });
    if (q.gold_ids) {
      var found = gold.filter(function (g) { return seen[g]; }).length;
      box.appendChild(el("div", "step-head", "gold paragraphs retrieved: " + found + " of " + gold.length));
    } else {
      box.appendChild(el("div", "step-head", "gold paragraphs: not known for this question"));
    }
    return box;
  }

  function row(q) {
    var d = el("details", "q");
    d.dataset.id = q.id;
    var s = el("summary");
    s.appendChild(el("span", "badge", data.sources[q.src].key));
    s.appendChild(el("span", "badge", q.ds));
    if (q.kept !== null) { s.appendChild(el("span", "badge " + (q.kept ? "kept" : "dropped"), q.kept ? "kept" : "dropped")); }
    if (q.correct !== null) { s.appendChild(el("span", "badge " + (q.correct ? "correct" : "wrong"), q.correct ? "correct" : "wrong")); }
    s.appendChild(el("span", "qtext", q.q || "(no question text)"));
    var ans = el("span", "answer-line", "answer: ");
    ans.appendChild(el("b", null, q.answer === null ? "(none)" : q.answer));
    ans.appendChild(el("span", "field", "gold: " + ((q.gold || []).join(" | ") || "(none)")));
    ans.appendChild(el("span", "field", "tokens: " + q.tokens));
    ans.appendChild(el("span", "field id", q.id));
    s.appendChild(ans);
    if (q.reason) { s.appendChild(el("span", "reason", q.reason)); }
    d.appendChild(s);
    d.addEventListener("toggle", function () {
      if (d.open && !d.dataset.drawn) {
        d.dataset.drawn = "1";
        d.appendChild(stepsOf(q));
      }
    });
    return d;
  }

  function showMore() {
    var end = Math.min(shown + PAGE, matching.length);
    var frag = document.createDocumentFragment();
    for (var i = shown; i < end; i++) { frag.appendChild(row(matching[i])); }
    list.appendChild(frag);
    shown = end;
    count.textContent = matching.length + " of " + data.questions.length + " questions";
    more.hidden = shown >= matching.length;
    more.textContent = "show " + Math.min(PAGE, matching.length - shown) + " more";
  }

  function apply() {
    matching = data.questions.filter(matches);
    list.textContent = "";
    shown = 0;
    showMore();
  }

  ["source", "dataset", "kept", "correct"].forEach(function (k) { filters[k].addEventListener("change", apply); });
  filters.search.addEventListener("input", apply);
  more.addEventListener("click", showMore);
  apply();
}());
