// app/eval_text.c — the built-in evaluation text (a children's story written for kvchat, the same text as
// assets/eval/story.txt) and the passkey task's filler sentences.
#include "app/eval_text.h"

#include <stdlib.h>
#include <string.h>

// Paragraphs, joined with blank lines (kept apart so no literal exceeds C's 4095-character minimum).
static const char *const story[] = {
    "Once upon a time, in a small town near the hills, there lived a girl named Mia. Mia had a red "
    "bike, a brown dog called Pip, and a grandma who baked bread every morning. The town had one long "
    "street, one blue bridge, and one old clock tower that rang at noon.",
    "Every day after school, Mia rode her bike to the bakery. Pip ran beside her, and his ears flapped "
    "in the wind. Grandma always gave Mia a warm roll with butter. \"Eat it slowly,\" Grandma said, "
    "\"good bread is like a good story. It tastes best when you take your time.\"",
    "One morning, the clock tower did not ring. The people on the street looked up. The big hands were "
    "stuck at ten past nine. \"Oh no,\" said Mr. Lee, the man who sold apples. \"How will we know when "
    "it is lunch time?\" The children laughed, but the grown-ups were worried. The clock had rung every "
    "day for a hundred years.",
    "Mia wanted to help. She asked Grandma, \"Who takes care of the clock?\" Grandma thought for a "
    "moment. \"There was a man named Tom. He fixed the clock when I was young. He lives in the yellow "
    "house by the river now. He is very old, but he is kind.\"",
    "So Mia and Pip went to the yellow house. The door was green, and there was a cat sleeping on the "
    "step. Mia knocked three times. An old man with white hair opened the door. \"Hello,\" he said. "
    "\"Who are you?\" Mia told him about the clock. Tom smiled, and his eyes were bright. \"That clock "
    "is my old friend,\" he said. \"Let us go and see what is wrong.\"",
    "They walked together to the tower. Tom walked slowly, so Mia walked slowly too. Pip sniffed every "
    "flower on the way. At the tower, Tom took out a big iron key from his coat. The door opened with a "
    "loud creak. Inside, there were many stairs going up and up. \"One step at a time,\" said Tom. They "
    "climbed and climbed. Mia counted the steps. There were ninety-nine.",
    "At the top, they found the heart of the clock. There were gears and wheels, big ones and small "
    "ones, all made of shiny brass. But one small wheel was not turning. Tom looked closely. \"Look "
    "here,\" he said. \"A bird has built a nest between the wheels.\" Mia looked. There was a tiny nest "
    "made of twigs and grass, and in the nest were three blue eggs.",
    "\"What can we do?\" asked Mia. \"If we take the nest away, the eggs will be cold. If we leave the "
    "nest, the clock will not work.\" Tom sat down on a box and thought. Mia sat down next to him and "
    "thought too. Pip lay at their feet.",
    "Then Mia had an idea. \"We can move the nest to a safe place near the window. It is warm there, "
    "and the mother bird can still find it.\" Tom nodded. \"That is a good idea. You are a clever "
    "girl.\" Very gently, Mia lifted the nest with both hands. She put it on a little shelf by the "
    "window, where the sun was shining. A moment later, a small brown bird flew in and sat on the eggs. "
    "She did not seem upset at all.",
    "Tom oiled the wheels and turned a few screws. Then he pulled a long rope. The gears began to move. "
    "Tick, tock, tick, tock. At twelve o'clock, the bell rang loud and clear over the whole town. Down "
    "on the street, people clapped and cheered. Mr. Lee threw his hat into the air.",
    "When Mia and Tom came down, everyone wanted to thank them. Grandma brought a basket of fresh bread "
    "for everyone. Mr. Lee gave Mia the reddest apple he had. Tom said, \"I am too old to climb those "
    "stairs every week. Maybe Mia can help me take care of the clock.\" Mia was so happy that she "
    "jumped up and down. Pip barked and wagged his tail.",
    "From that day on, every Saturday, Mia and Tom climbed the ninety-nine steps together. They oiled "
    "the wheels, they checked the bell, and they said hello to the little bird. In the spring, the "
    "three eggs hatched, and three tiny birds learned to fly from the window of the clock tower. Each "
    "day at noon, when the bell rang, Mia smiled. She knew that the clock, the birds, and the whole "
    "town were taking their time, just like good bread and a good story.",
    "The next summer, a boy named Sam moved to the town. He did not know anyone, and he felt shy. He "
    "sat alone by the river and threw small stones into the water. Mia saw him one afternoon when she "
    "was riding her bike. She stopped and said, \"Hi, I am Mia. Do you want to see the inside of the "
    "clock tower?\" Sam looked up. \"Can I really go inside?\" he asked. \"Yes,\" said Mia, \"but you "
    "have to climb ninety-nine steps.\"",
    "Sam was a little afraid of high places, but he wanted to see the gears. Mia showed him how to hold "
    "the rail and look only at the next step. When they reached the top, Sam forgot to be afraid. He "
    "watched the wheels turn and listened to the tick and the tock. \"It is like a giant heart,\" he "
    "whispered. Tom laughed. \"That is just what I said when I was your age.\"",
    "After that, Mia, Sam, and Tom took care of the clock together. In the autumn, they painted the "
    "door of the tower green, like the door of Tom's house. In the winter, they put a warm cloth near "
    "the window for the birds. And every day at noon, the bell rang, and the people of the little town "
    "looked up and smiled.",
};

char *eval_builtin_text(void) {
    size_t n = 0, k = sizeof story / sizeof *story;
    for (size_t i = 0; i < k; i++)
        n += strlen(story[i]) + 2;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    size_t at = 0;
    for (size_t i = 0; i < k; i++) {
        size_t m = strlen(story[i]);
        memcpy(s + at, story[i], m);
        at += m;
        if (i + 1 < k) {
            memcpy(s + at, "\n\n", 2);
            at += 2;
        }
    }
    s[at] = 0;
    return s;
}

// Plain statements with nothing to remember; the passkey hides among them.
static const char *const filler[] = {
    "The road went over the hill and down into the valley.",
    "A few clouds moved slowly across the afternoon sky.",
    "The shop on the corner sold bread, milk and newspapers.",
    "Somewhere a dog barked twice and then was quiet again.",
    "The river was wide and calm, and the water looked grey.",
    "Children walked home from school in small groups.",
    "The wind turned the pages of a book left on a bench.",
    "An old bus stopped at the station and waited for a while.",
    "The trees along the street were green and full of leaves.",
    "Nothing much happened in the town that day.",
};

int eval_filler_count(void) { return (int)(sizeof filler / sizeof *filler); }
const char *eval_filler(int i) { return filler[i % eval_filler_count()]; }
